"""What every peer shares: its command line, the data, thread pinning and the JSON-lines report.

A peer is run by the harness as ``python -m benchmarks.peers.<peer> --workload W1 --epochs 3``
from the repository root and writes one JSON object per line on stdout:

    {"event": "start", "peer": ..., "workload": ..., "versions": {...}, "data": ..., "threads": 2}
    {"peer": ..., "workload": ..., "run": "relu 2 adam lr=0.001 #0", "epoch": 1, "seconds": 4.1,
     "others": 0.01, "loss": ..., "accuracy": ..., "val_loss": ..., "val_accuracy": ...}  # per epoch
    {"event": "run_end", "peer": ..., "workload": ..., "run": ..., "seconds": ...}  # build + fit, + extras
    {"event": "end", "peer": ..., "workload": ..., "max_rss_mib": ..., "wall_seconds": ...}

"others" is the cores other processes kept busy during the epoch (benchmarks/machine.py).
Anything else a framework prints goes to stderr. Only numpy is needed here, so every venv can
import this module.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.workloads import WORKLOADS, Run, Workload, select_runs

DEFAULT_DATA = Path.home() / ".cache" / "mnistlab" / "mnist.npz"


def parse_args(peer_default: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=f"benchmark peer ({peer_default})")
    p.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    p.add_argument("--epochs", type=int, default=3, help="epochs measured per run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (and cores pinned)")
    p.add_argument("--repeats", type=int, default=None,
                   help="sweeps: measure only the first N repeats of each configuration")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Keras-style mnist.npz")
    p.add_argument("--peer", default=peer_default, help="name written in the report lines")
    p.add_argument("--subset", type=int, default=None,
                   help="smoke tests only: the first N training and test images")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (cuda: one GPU)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: autocast forward passes, fp32 weights and loss")
    return p.parse_args(argv)


def pin_threads(threads: int) -> None:
    """Restrict the process to `threads` cores, whatever thread pools the framework starts."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


@dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray  # (60000,) integer labels
    x_test: np.ndarray  # (10000, 28, 28) uint8
    y_test: np.ndarray
    source: str  # the file read, or why random data stands in


def load_mnist(path: Path, subset: int | None = None) -> Mnist:
    """MNIST from a Keras-style mnist.npz; random uint8 of the same shapes when it is absent
    (timings stay meaningful, accuracies do not: the start line says which)."""
    if path.exists():
        with np.load(path) as f:
            arrays, source = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")], str(path)
    else:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
                  rng.integers(0, 10, 60_000, dtype=np.int64),
                  rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8),
                  rng.integers(0, 10, 10_000, dtype=np.int64)]
        source = f"random (no {path})"
    if subset:
        arrays, source = [a[:subset] for a in arrays], f"{source}, first {subset} images"
    return Mnist(*arrays, source)


def max_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Reporter:
    """Writes the peer's JSON lines, each stamped with peer and workload."""

    def __init__(self, peer: str, workload: Workload):
        self.peer, self.workload = peer, workload.name
        self.t0 = time.perf_counter()

    def emit(self, **fields) -> None:
        line = {"peer": self.peer, "workload": self.workload, **fields}
        print(json.dumps(line), flush=True)

    def start(self, versions: dict, data: Mnist, threads: int, **extra) -> None:
        self.emit(event="start", versions=versions, data=data.source, threads=threads, **extra)

    def epoch(self, run: Run, epoch: int, timing: dict, logs: dict) -> None:
        metrics = {k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        self.emit(run=run.label, epoch=epoch, **timing, **metrics)

    def run_end(self, run: Run, seconds: float, **extra) -> None:
        self.emit(event="run_end", run=run.label, seconds=round(seconds, 4), **extra)

    def end(self) -> None:
        self.emit(event="end", max_rss_mib=round(max_rss_mib(), 1),
                  wall_seconds=round(time.perf_counter() - self.t0, 3))


def main_loop(args: argparse.Namespace, versions: dict, train_run, **start_extra) -> None:
    """The peer's whole life: load data, then train each selected run for `args.epochs`.

    `train_run(run, data, epochs, on_epoch)` builds and fits one run, calling
    ``on_epoch(epoch, timing, logs)`` after each epoch, `timing` being what an
    `EpochClock` started before the epoch returns when validation is done; a dict it returns
    is added to the run's ``run_end`` line.
    """
    workload = WORKLOADS[args.workload]
    report = Reporter(args.peer, workload)
    data = load_mnist(args.data, args.subset)
    report.start(versions, data, args.threads, **start_extra)
    for run in select_runs(workload, args.repeats):
        t = time.perf_counter()
        extra = train_run(run, data, args.epochs,
                          lambda epoch, timing, logs, run=run: report.epoch(run, epoch, timing, logs))
        report.run_end(run, time.perf_counter() - t, **(extra or {}))
    report.end()
