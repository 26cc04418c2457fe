"""mnistlab peer: the workload written as a study and trained by mnistlab's own engine.

Run from the repository root with the project venv:

    .venv/bin/python -m benchmarks.peers.mnistlab_peer --workload S1 --epochs 3

The layer table of ``benchmarks/workloads.py`` becomes a study TOML text (Keras call syntax, one
[[model]] per model, the learning rates of a sweep as ``"optimizer.learning_rate"``, repeats as
``repeats``), which is parsed with ``mnistlab.spec.parse_study`` so a schema mismatch shows here.
Training it and writing the JSON lines of ``benchmarks/peers/common.py`` (one line per epoch with
``run``, ``epoch``, ``seconds`` and the four metrics; ``run_end``; ``end``) is `train_study`'s job,
through mnistlab's runner into a scratch store, exactly the work `mnistlab run` does.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

from benchmarks.peers.common import parse_args, pin_threads
from benchmarks.workloads import WORKLOADS, Layer, Run, select_runs

OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD"}


def _dense_text(a: dict) -> str:
    init = f", kernel_initializer=RandomNormal(stddev={a['stddev']})" if "stddev" in a else ""
    return f"Dense({a['units']}, activation={a['activation']!r}{init})"


LAYER_TEXT = {  # Layer.kind -> its Keras call text from Layer.args
    "Dense": _dense_text,
    "Conv2D": lambda a: (f"Conv2D({a['filters']}, ({a['kernel_size']}, {a['kernel_size']}), "
                         f"padding={a['padding']!r}, activation={a['activation']!r})"),
    "MaxPooling2D": lambda a: f"MaxPooling2D(({a['pool_size']}, {a['pool_size']}))",
    "BatchNormalization": lambda a: f"BatchNormalization(momentum={a['momentum']}, epsilon={a['epsilon']})",
    "Dropout": lambda a: f"Dropout({a['rate']})",
    "Flatten": lambda a: "Flatten()",
}


def layer_text(layer: Layer) -> str:
    """One layer in the Keras call syntax a study file uses."""
    return LAYER_TEXT[layer.kind](layer.args)


def study_toml(name: str, runs: tuple[Run, ...], epochs: int, subset: int | None = None,
               device: str = "cpu", precision: str = "fp32") -> str:
    """The runs as one study: a [[model]] per model, its learning rates swept, repeats counted."""
    by_model: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_model[run.model.name].append(run)
    lines = [f"name = {json.dumps('benchmark ' + name)}",
             f"repeats = {max(r.repeat for r in runs) + 1}",
             "[train]", f"epochs = {epochs}", f"device = {json.dumps(device)}", f"precision = {json.dumps(precision)}"]
    lines += [f"train_size = {subset}", f"test_size = {subset}"] if subset else []
    for model_name, model_runs in by_model.items():
        first = model_runs[0]
        rates = sorted({r.learning_rate for r in model_runs})
        layers = ", ".join(json.dumps(layer_text(layer)) for layer in first.model.layers)
        optimizer = OPTIMIZER_NAMES[first.optimizer]
        lines += ["[[model]]", f"name = {json.dumps(model_name)}", f"layers = [{layers}]",
                  f"batch_size = {first.batch_size}"]
        if len(rates) == 1:
            lines.append(f"optimizer = {json.dumps(f'{optimizer}(learning_rate={rates[0]})')}")
        else:
            lines += [f"optimizer = {json.dumps(optimizer)}",
                      f"sweep = {{ \"optimizer.learning_rate\" = {rates} }}"]
    return "\n".join(lines) + "\n"


def train_study(study, args) -> None:
    """Train the study as a user would (``run_study`` into a scratch store: every epoch committed and
    checkpointed), writing the peer's JSON lines. A group of same-shape runs is one "run" here: its
    epochs are timed as the group's wall time, so a sweep's total is the sum over its groups."""
    import tempfile

    import torch

    from benchmarks.machine import EpochClock
    from benchmarks.peers.common import Reporter
    from mnistlab import __version__
    from mnistlab.api import EngineOptions, check_study
    from mnistlab.runner.driver import Silent, run_study
    from mnistlab.store import Store

    check_study(study)
    report = Reporter(args.peer, WORKLOADS[args.workload])
    report.emit(event="start", versions={"mnistlab": __version__, "torch": torch.__version__},
                data="mnistlab cache" + (f", first {args.subset} images" if args.subset else ""),
                threads=args.threads, device=args.device, precision=args.precision)

    class Lines(Silent):
        def run_started(self, specs, resumed_from):
            self.specs, self.label = specs, specs[0].label + (f" +{len(specs) - 1} grouped" if len(specs) > 1 else "")
            self.started, self.clock = time.perf_counter(), EpochClock()
            self.clock.start()

        def epoch(self, spec, row):
            if spec is not self.specs[-1]:  # a group's epoch ends with its last member's row
                return
            metrics = {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            report.emit(run=self.label, epoch=row["epoch"], **self.clock.stop(), **metrics)
            self.clock.start()

        def run_finished(self, spec, status, detail):
            if spec is self.specs[-1]:
                report.emit(event="run_end", run=self.label, seconds=round(time.perf_counter() - self.started, 4),
                            runs=len(self.specs), status=status)

    with tempfile.TemporaryDirectory() as scratch:
        run_study(study, Store(f"sqlite:///{scratch}/bench.db"), Lines(),
                  engine=EngineOptions.from_environment(settings=study.train))  # its device and precision
    report.end()


def main() -> None:
    args = parse_args("mnistlab")
    pin_threads(args.threads)
    try:
        from mnistlab.spec import parse_study
    except ImportError as exc:
        raise SystemExit(f"mnistlab peer: cannot import mnistlab ({exc})") from None
    runs = select_runs(WORKLOADS[args.workload], args.repeats)
    study = parse_study(study_toml(args.workload, runs, args.epochs, args.subset, args.device, args.precision),
                        path=f"<benchmark {args.workload}>")
    train_study(study, args)


if __name__ == "__main__":
    main()
