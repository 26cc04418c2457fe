"""One study three ways on this machine: inline, ``--workers 2`` and Ray on a local two-node cluster.

    .venv/bin/python -m benchmarks.executors                      # the built-in tiny study below
    .venv/bin/python -m benchmarks.executors --study my.toml
    .venv/bin/python -m benchmarks.executors --study benchmarks/cnn_workers.toml --workers 2 3 --no-ray

Each executor trains the whole study into its own scratch store; the table gives each one's wall
time (Ray's cluster start separately: a real cluster is started once, not per study) and how far
its final numbers are from inline's. The Ray cluster is ``mnistlab.runner.ray_executor.local_cluster`` (``ray.cluster_utils.Cluster``): a head
without CPUs and two worker nodes of one CPU each, every node its own raylet and object store, as
on separate machines (docs/DISTRIBUTED.md, "Measured here").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

STUDY = '''
name = "executors"
description = "six MLPs of different widths (no grouping): work for two workers"
seed = 0
[train]
epochs = 3
batch_size = 128
train_size = 20000
test_size = 5000
''' + "".join(f'''
[[model]]
name = "mlp {units}"
layers = ["Dense({units}, activation='relu')", "Dense(10, activation='softmax')"]
''' for units in (64, 96, 128, 160, 192, 224))


def train(study, executor: str, scratch: str, **options) -> tuple[float, dict[str, dict]]:
    from mnistlab.api import EngineOptions, RunOptions, Store, run

    store = Store(f"sqlite:///{scratch}/{executor}{options.get('workers', '')}.db")  # a fresh store each
    start = time.perf_counter()
    run(study, store, options=RunOptions(executor=executor, **options), engine=EngineOptions())
    seconds = time.perf_counter() - start
    return seconds, {r["id"]: r for r in store.runs(study=study.name)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.executors", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, default=None, help="a study file (default: six MLPs on a slice)")
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="pool sizes to time (default: 2)")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="leave out the Ray cluster")
    args = p.parse_args()

    from mnistlab.api import load_study
    from mnistlab.runner.ray_executor import local_cluster
    from mnistlab.spec import parse_study
    from mnistlab.engine.check import check_study

    study = load_study(args.study) if args.study else parse_study(STUDY, "<executors>")
    check_study(study)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cores = os.cpu_count() or 1
        rows.append((f"inline ({cores} threads)", *train(study, "inline", scratch)))
        for n in args.workers:
            threads = max(1, cores // n)
            rows.append((f"--workers {n} ({threads} thread{'s' * (threads != 1)} each)",
                         *train(study, "processes", scratch, workers=n)))
        startup = None
        if args.ray:
            start = time.perf_counter()
            with local_cluster(nodes=2, cpus_per_node=1):
                startup = time.perf_counter() - start
                rows.append(("Ray, 2 worker nodes x 1 CPU", *train(study, "ray", scratch)))
    reference = rows[0][2]
    started = f"; Ray cluster start (head + 2 nodes): {startup:.1f} s" if startup is not None else ""
    print(f"{study.name}: {len(reference)} runs{started}")
    print("| executor | wall s | runs done | test accuracy = inline's | max abs. diff. of test loss |")
    print("|---|---|---|---|---|")
    for name, seconds, runs in rows:
        same = sum(runs[i]["test_accuracy"] == reference[i]["test_accuracy"] for i in reference)
        diff = max(abs(runs[i]["test_loss"] - reference[i]["test_loss"]) for i in reference)
        done = sum(r["status"] == "done" for r in runs.values())
        print(f"| {name} | {seconds:.1f} | {done} | {same} of {len(reference)} | {diff:.2g} |")


if __name__ == "__main__":
    main()
