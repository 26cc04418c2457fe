"""mnistlab's own engine paths side by side, in one process, alternating: ms a training step.

    .venv/bin/python -m benchmarks.engine_ab --workload W1 --rounds 5
    .venv/bin/python -m benchmarks.engine_ab --workload W3 --rounds 4 --images 4200 --paths mkl-autograd,onednn-autograd
    .venv/bin/python -m benchmarks.engine_ab --workload W2 --profile onednn-fast   # torch.profiler's op table

Paths: ``mkl-autograd`` (F.linear, i.e. MKL, under autograd: what a plain PyTorch loop does),
``onednn-autograd`` (Dense layers on oneDNN, autograd), ``onednn-fast`` (the default for MLPs:
fast.FastStep, no graph). Each path trains its own copy of the workload's model, built from the
same seed, over the first ``--images`` training images a round (``_train_epoch``: batches, loss,
optimizer step; no evaluation, no store); the first round is warm-up and left out of the median.
Where ``benchmarks.run`` compares mnistlab with its peers, this says which of mnistlab's own
paths pays, and by how much (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

PATHS = {  # name -> EngineOptions fields
    "mkl-autograd": {"dense_gemm": "torch", "graph_free_mlp_step": False},
    "onednn-autograd": {"dense_gemm": "onednn", "graph_free_mlp_step": False},
    "onednn-fast": {"dense_gemm": "onednn", "graph_free_mlp_step": True},
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engine_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="W1", help="W1, W2 or W3 (the first run of a sweep also works)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=25_600, help="training images a round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--profile", default=None, help="instead: one round of this path under torch.profiler")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.peers.mnistlab_peer import study_toml
    from benchmarks.workloads import WORKLOADS, select_runs
    from mnistlab.engine import fit as engine
    from mnistlab.engine.options import EngineOptions
    from mnistlab.data import load_tensors
    from mnistlab.engine.optim import build_optimizer
    from mnistlab.spec import expand, parse_study

    if args.workload not in WORKLOADS:
        raise SystemExit(f"--workload: {args.workload!r} is not one of {list(WORKLOADS)}")
    names = [args.profile] if args.profile else [n.strip() for n in args.paths.split(",") if n.strip()]
    if unknown := [n for n in names if n not in PATHS]:
        raise SystemExit(f"unknown path(s) {unknown}: choose from {list(PATHS)}")
    runs = select_runs(WORKLOADS[args.workload], 1)[:1]
    spec = expand(parse_study(study_toml(args.workload, runs, 1, args.images), path=f"<{args.workload}>"))[0]
    data = load_tensors("mnist", image=engine.data_shape(spec), train_size=args.images, test_size=1000)
    options = {name: EngineOptions(**PATHS[name]).resolved() for name in names}

    states = {}
    for name in names:
        model = engine.make_model(spec, data, options[name])
        shuffle, noise = engine.generators(spec, "cpu")
        for module in model.modules():
            if hasattr(module, "generator"):
                module.generator = noise
        states[name] = (model, build_optimizer(spec.optimizer_call(), model.parameters()), shuffle)

    def one_round(name: str) -> float:
        model, optimizer, shuffle = states[name]
        start = time.perf_counter()
        engine._train_epoch(model, optimizer, data, spec.batch_size, shuffle, engine.Callbacks(),
                            options[name].graph_free_mlp_step)
        return (time.perf_counter() - start) / -(-args.images // spec.batch_size) * 1e3

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        one_round(args.profile)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_round(args.profile)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        return
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(one_round(name))
    print(f"{args.workload}, {args.threads} threads, {args.images} images a round, ms a step "
          f"(median of rounds 2-{args.rounds}; every round):")
    for name, values in times.items():
        steady = values[1:] or values
        print(f"  {name:16s} {statistics.median(steady):8.2f}   {[round(v, 2) for v in values]}")


if __name__ == "__main__":
    main()
