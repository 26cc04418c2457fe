"""mnistlab's own engine paths side by side, in one process, alternating: ms a training step.

    .venv/bin/python -m benchmarks.engine_ab --workload W1 --rounds 5
    .venv/bin/python -m benchmarks.engine_ab --workload W3 --rounds 4 --images 4200 --paths mkl-autograd,onednn-autograd
    .venv/bin/python -m benchmarks.engine_ab --workload W3 --rounds 3 --images 4200 --paths onednn-autograd --precisions fp32,bf16
    .venv/bin/python -m benchmarks.engine_ab --workload S2 --models all --paths onednn-fast --precisions fp32,bf16
    .venv/bin/python -m benchmarks.engine_ab --workload W2 --profile onednn-fast   # torch.profiler's op table

Paths: ``mkl-autograd`` (F.linear, i.e. MKL, under autograd: what a plain PyTorch loop does),
``onednn-autograd`` (Dense layers on oneDNN, autograd), ``onednn-fast`` (the default for MLPs:
fast.FastStep, no graph), each in every ``--precisions`` (fp32; bf16: autocast, where the oneDNN
fp32 Linear and the graph-free step step aside, so every bf16 path is torch's autograd one: the
"runs as" column says what resolved). Each contender trains its own copy of the workload's model,
built from the same seed, over the first ``--images`` training images a round (``_train_epoch``:
batches, loss, optimizer step; no evaluation, no store); the first round is warm-up and left out of
the median. A sweep's distinct models (``--models all``; default: its first run) are measured one
after the other, and the sweep's total is their sum (each model trains the same number of steps).
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engine_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="W1", help="W1, W2, W3, or a sweep (S1, S2: see --models)")
    p.add_argument("--models", default="first", help="a sweep's models: first (its first run) or all")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=25_600, help="training images a round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--precisions", default="fp32", help="fp32, bf16, or fp32,bf16")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--profile", default=None, help="instead: one round of this path under torch.profiler")
    return p.parse_args()


def main() -> None:
    args = parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.peers.mnistlab_peer import study_toml
    from benchmarks.workloads import WORKLOADS
    from mnistlab.data import load_tensors
    from mnistlab.engine import fit as engine
    from mnistlab.engine.optim import build_optimizer, learning_rate
    from mnistlab.engine.options import EngineOptions
    from mnistlab.spec import expand, parse_study

    if args.workload not in WORKLOADS:
        raise SystemExit(f"--workload: {args.workload!r} is not one of {list(WORKLOADS)}")
    names = [args.profile] if args.profile else [n.strip() for n in args.paths.split(",") if n.strip()]
    precisions = [n.strip() for n in args.precisions.split(",") if n.strip()]
    if unknown := [n for n in names if n not in PATHS]:
        raise SystemExit(f"unknown path(s) {unknown}: choose from {list(PATHS)}")
    runs = list({r.model.name: r for r in reversed(WORKLOADS[args.workload].runs) if r.repeat == 0}.values())[::-1]
    runs = runs if args.models == "all" else runs[:1]
    totals: dict[tuple[str, str], float] = {}
    for run in runs:
        spec = expand(parse_study(study_toml(args.workload, (run,), 1, args.images), path=f"<{args.workload}>"))[0]
        data = load_tensors("mnist", image=engine.data_shape(spec), train_size=args.images, test_size=1000,
                            device=args.device)
        options = {(n, p): EngineOptions(**PATHS[n], precision=p).on(data.x_train.device)
                   for n in names for p in precisions}
        states = {}
        for key, used in options.items():
            model = engine.make_model(spec, data, used)
            if used.channels_last and data.x_train.dim() == 4:
                model = model.to(memory_format=torch.channels_last)
            shuffle, noise = engine.generators(spec, data.x_train.device)
            for module in model.modules():
                if hasattr(module, "generator"):
                    module.generator = noise
            states[key] = (model, build_optimizer(spec.optimizer_call(), model.parameters()), shuffle)
        lr = learning_rate(spec.optimizer_call())  # the schedule (a constant for the workloads' optimizers)
        batches = -(-args.images // spec.batch_size)
        steps = {key: 0 for key in options}  # each contender's position in the schedule

        def one_round(key) -> float:
            model, optimizer, shuffle = states[key]
            start = time.perf_counter()
            engine._train_epoch(model, optimizer, data, spec.batch_size, shuffle, engine.Callbacks(), options[key],
                                lr, steps[key])
            steps[key] += batches
            if data.x_train.is_cuda:
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / batches * 1e3

        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            key = (args.profile, precisions[0])
            one_round(key)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                one_round(key)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
            return
        times: dict[tuple[str, str], list[float]] = {key: [] for key in options}
        for _ in range(args.rounds):
            for key in options:
                times[key].append(one_round(key))
        print(f"{args.workload} {run.model.name!r} on {args.device}, {args.threads} threads, {args.images} images "
              f"a round, ms a step (median of rounds 2-{args.rounds}; every round):")
        for key, values in times.items():
            steady = statistics.median(values[1:] or values)
            totals[key] = totals.get(key, 0.0) + steady
            used = options[key]
            runs_as = f"{used.dense_gemm}{'+graph-free' if used.graph_free_mlp_step else ''}"
            print(f"  {key[0]:16s} {key[1]:5s} {steady:8.2f}   runs as {runs_as:18s} {[round(v, 2) for v in values]}")
    if len(runs) > 1:
        print(f"{args.workload}, all {len(runs)} models, sum of ms a step:")
        for key, total in totals.items():
            print(f"  {key[0]:16s} {key[1]:5s} {total:8.2f}")
    for name in names:
        if "fp32" in precisions and "bf16" in precisions:
            print(f"{name}: bf16 / fp32 = {totals[(name, 'bf16')] / totals[(name, 'fp32')]:.2f}")


if __name__ == "__main__":
    main()
