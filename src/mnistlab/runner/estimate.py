"""What a study will cost before anything trains: runs in total, done, to train, how they group,
multiply-adds, wall time on this machine and peak memory.

>>> plan = estimate(load_study("studies/quick.toml"), Store.for_study("studies/quick.toml"))
>>> plan.line()      # 'plan: 3 runs, 0 done, 3 to train in 3 groups; about 1 min 40 s …'

Wall time comes from the store's measured seconds of done runs of the same shape (layers, batch
size, data) where there are some, scaled to the epochs: the median epoch of each run, so that an
epoch stretched by a pause (a suspended process, a busy neighbour) does not stretch the estimate;
else from timing a few training steps of the group on random data
(:func:`mnistlab.engine.cost.calibrate`). Timing on a busy machine can read many times slower than
the same machine alone (docs/PERFORMANCE.md, "Sharing the machine"), so the plan says when the load
average was high while it timed.

With ``workers`` (``run -j N``), each group is timed at the threads a worker gets (cores / N; a
store's runs count only if they trained at that many), the groups are dealt longest first to the
worker free first, as the pool takes them, and the plan's time is when the last worker ends; its
memory is the largest N groups' together.
"""

from __future__ import annotations

import heapq
import os
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import torch

from ..engine import cost
from ..spec import RunSpec, Study, expand
from ..store import Store
from ..wording import counted, duration
from .planning import chosen, epochs_done, plan as group_plan

RUN_LIMIT = 10_000  # `mnistlab run` asks for --yes above either limit
SECONDS_LIMIT = 24 * 3600
SAMPLE = 25  # the latest done runs of a shape whose epochs the estimate reads
BUSY = 0.5  # share of the cores that other work holding them makes the machine busy


@dataclass
class GroupCost:
    """One group (or lone run) of the runs to train."""

    labels: list[str]  # its runs' configurations, repeats folded
    runs: int
    macs_per_image: int
    macs_per_run: int
    seconds_per_run: float
    source: str  # "store: n runs" (measured seconds), "calibrated" (timed steps) or "—" (not estimated)
    peak_bytes: int
    resumes_after: int = 0  # epochs its runs have done already (an interrupted run resumes from there)


@dataclass
class Plan:
    study: str
    total: int
    done: int
    left_alone: int  # failed or diverged: trained again only with --retry-failed
    groups: list[GroupCost] = field(default_factory=list)
    busy: tuple[float, int] | None = None  # (load average, cores) when a group was timed on a busy machine
    workers: int = 1  # local worker processes (run -j N), each with threads = cores // workers
    threads: int | None = None  # each training process's threads where given (run --threads N)

    @property
    def to_train(self) -> int:
        return sum(g.runs for g in self.groups)

    @property
    def seconds(self) -> float:
        """Wall time: the groups one after another, or with workers, when the last worker ends."""
        jobs = sorted((g.seconds_per_run * g.runs for g in self.groups), reverse=True)
        ends = [0.0] * min(self.workers, len(jobs))
        for job in jobs:  # the longest first, to the worker that is free first (the pool's claim order)
            heapq.heapreplace(ends, ends[0] + job)
        return max(ends, default=0.0)

    @property
    def peak_bytes(self) -> int:
        """Groups train one after another: the largest; with workers, the largest N at once."""
        return sum(sorted((g.peak_bytes for g in self.groups), reverse=True)[:self.workers])

    def over_limit(self) -> str | None:
        """Why ``mnistlab run`` should ask for --yes first, or None."""
        if self.to_train > RUN_LIMIT:
            return f"{self.to_train:,} runs to train (more than {RUN_LIMIT:,})"
        if self.seconds > SECONDS_LIMIT:
            return f"about {duration(self.seconds)} of training (more than {SECONDS_LIMIT // 3600} h)"
        return None

    def line(self) -> str:
        """The one-line estimate ``plan`` ends with and ``run`` prints before it starts."""
        left = f", {self.left_alone} failed or diverged left alone" if self.left_alone else ""
        head = f"plan: {counted(self.total, 'run')}, {self.done} done{left}, {self.to_train} to train"
        if not self.groups:
            return head
        groups = len(self.groups)
        busy = ""
        if self.busy:
            load, cores = self.busy
            busy = (f" (timed while the machine was busy, load {load:.1f} on {cores} core{'s' * (cores != 1)}: "
                    f"alone it may train several times faster)")
        threads = self.threads or worker_threads(self.workers)
        pool = (f" in {self.workers} workers of {threads} thread{'s' * (threads != 1)}" if self.workers > 1
                else f" on {threads} thread{'s' * (threads != 1)}" if self.threads else "")
        return (f"{head} in {groups} group{'s' * (groups != 1)}; about {duration(self.seconds)} on this "
                f"machine{pool}{busy}, peak memory about {self.peak_bytes / 2**20:,.0f} MiB")


def worker_threads(workers: int) -> int:
    """Torch threads of each of ``workers`` local worker processes (as executors.processes gives them)."""
    return max(1, (os.cpu_count() or 1) // workers)


@contextmanager
def threads_for(workers: int, threads: int | None = None) -> Iterator[int | None]:
    """Time in this process as one of ``workers`` would train (or with ``threads`` where given): its
    thread count for the while; None (this process's own) with one worker and no ``threads``."""
    if workers <= 1 and not threads:
        yield None
        return
    before, wanted = torch.get_num_threads(), threads or worker_threads(workers)
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


def estimate(study: Study, store: Store, group: bool = True, retry_failed: bool = False,
             calibrate: bool = True, workers: int = 1, threads: int | None = None,
             models: str | tuple[str, ...] = ()) -> Plan:
    """The cost of ``mnistlab run`` on ``study`` now (with ``workers`` local worker processes, of
    ``threads`` each where given; of only the runs of ``models``, names or globs, where given);
    ``calibrate=False`` leaves shapes the store has not measured at 0 seconds (for tests and dry listings)."""
    specs = chosen(expand(study), models)
    status, resumes = {}, {}
    for i in range(0, len(specs), 500):  # SQL's IN (...) in chunks: a study may have 100,000 runs
        rows = store.runs(ids=[s.id for s in specs[i:i + 500]], current=False)
        status |= {r["id"]: r["status"] for r in rows}
        resumes |= epochs_done(rows)
    again = ("failed", "diverged") if retry_failed else ()
    todo = [s for s in specs if status.get(s.id, "pending") in ("pending", "running", *again)]
    done = sum(status.get(s.id) == "done" for s in specs)
    known: dict[Any, GroupCost] = {}  # same shape, optimizer and group size: same cost
    with threads_for(workers, threads) as timed_at:
        measured = _measured(store, todo, timed_at)
        groups = [_resumed(_group_cost(part, measured, known, calibrate), part[0].epochs, after)
                  for members in group_plan(todo, group) for after, part in _by_epochs_done(members, resumes)]
    timed = any(g.source == "calibrated" for g in groups)
    return Plan(study.name, len(specs), done, len(specs) - done - len(todo), groups,
                busy=machine_busy() if timed else None, workers=workers, threads=threads)


def _by_epochs_done(members: list[RunSpec], resumes: dict[str, int]) -> list[tuple[int, list[RunSpec]]]:
    """A group's runs split by the epoch they resume from, as the runner claims them (members train
    together only from the same epoch)."""
    parts: dict[int, list[RunSpec]] = {}
    for spec in members:
        parts.setdefault(min(resumes.get(spec.id, 0), spec.epochs), []).append(spec)
    return sorted(parts.items())


def _resumed(group: GroupCost, epochs: int, done: int) -> GroupCost:
    """``group``'s cost when its runs resume after ``done`` of their ``epochs``: the epochs left."""
    if not done:
        return group
    return replace(group, seconds_per_run=group.seconds_per_run * (epochs - done) / epochs, resumes_after=done)


def machine_busy() -> tuple[float, int] | None:
    """(1-minute load average, cores) when other work holds most of the cores, else None. The
    calibration itself adds under one to the load (a few seconds of steps)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on this platform
        return None
    return (load, cores) if load >= BUSY * cores + 1 else None


def shape_key(spec: RunSpec | dict[str, Any]) -> tuple:
    """What a run's seconds per epoch depend on (besides the machine and its grouping)."""
    get = spec.get if isinstance(spec, dict) else lambda k: getattr(spec, k)
    return (tuple(get("layers")), get("dataset"), get("batch_size"), get("train_size"), get("test_size"),
            get("validation"))


def _measured(store: Store, todo: list[RunSpec], threads: int | None = None) -> dict[tuple, list[float]]:
    """Seconds per epoch of the store's done runs (each run's median epoch), by shape, for the
    shapes still to train; with ``threads``, only runs that trained with that many."""
    wanted = {shape_key(s) for s in todo}
    found: dict[tuple, list[float]] = {}
    if not wanted:
        return found
    same: dict[tuple, list[dict]] = {}
    for run in store.runs(current=False):
        key = shape_key(run["spec"])
        if key in wanted and run["status"] == "done" and run["seconds"] and run["epochs_done"] and (
                threads is None or (run["environment"] or {}).get("threads") == threads):
            same.setdefault(key, []).append(run)
    sample = [run for runs in same.values() for run in runs[-SAMPLE:]]  # a median needs no more
    histories: dict[str, list[dict[str, float]]] = {}
    for i in range(0, len(sample), 500):  # SQL's IN (...) in chunks, as above
        histories |= store.histories(run["id"] for run in sample[i:i + 500])
    for run in sample:
        epochs = [row["seconds"] for row in histories[run["id"]] if row.get("seconds")]
        per_epoch = statistics.median(epochs) if epochs else run["seconds"] / run["epochs_done"]
        found.setdefault(shape_key(run["spec"]), []).append(per_epoch)
    return found


def _group_cost(members: list[RunSpec], measured: dict[tuple, list[float]], known: dict[Any, GroupCost],
                calibrate: bool) -> GroupCost:
    spec = members[0]
    labels = list(dict.fromkeys(s.label for s in members))
    key = (shape_key(spec), spec.epochs, spec.optimizer.split("(")[0], len(members))
    if key in known:
        return replace(known[key], labels=labels)
    seen = measured.get(shape_key(spec))
    if seen:
        per_run, source = statistics.median(seen) * spec.epochs, f"store: {counted(len(seen), 'run')}"
    else:
        step = cost.calibrate(members) if calibrate else 0.0
        per_run = cost.seconds_per_run(members, step)
        source = "calibrated" if calibrate else "—"
    known[key] = GroupCost(labels, len(members), cost.macs_per_image(spec), cost.macs_per_run(spec), per_run,
                           source, cost.peak_bytes(members))
    return known[key]
