"""Run a study against a store: plan what is left, train it, write every result as it arrives.

>>> outcome = run_study(load_study("studies/quick.toml"), Store.for_study("studies/quick.toml"))

Runs already done (same id) are skipped; failed and diverged runs are retried only with
``retry_failed``; a run left ``running`` by a process that died is resumed from its last epoch
checkpoint. The store is written only here, in the driving process: :func:`claim`,
:func:`commit_epoch`, :func:`record_failure` and :func:`save_result` are the steps every executor
takes (the Ray driver too, with what its workers send back).
"""

from __future__ import annotations

import os
import platform
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Protocol

import torch

from ..version import __version__
from ..data import TrainData, load_tensors
from ..engine.checkpoint import Checkpoint, checkpoint_from_arrays, checkpoint_to_arrays
from ..engine.fit import Callbacks, RunResult, data_shape, fit
from ..engine.group import MAX_GROUP, fit_group, group_key
from ..engine.options import EngineOptions
from ..spec import RunSpec, Study, expand
from ..store import Store
from .options import RunOptions


class Reporter(Protocol):
    """What the runner tells the person watching (the CLI implements it with rich)."""

    def study_started(self, total: int, done: int) -> None: ...
    def run_started(self, specs: list[RunSpec], resumed_from: int) -> None: ...  # one run or a group
    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def epoch(self, spec: RunSpec, row: dict[str, float]) -> None: ...
    def run_finished(self, spec: RunSpec, status: str, detail: str) -> None: ...


class Silent:
    def study_started(self, total: int, done: int) -> None: ...
    def run_started(self, specs: list[RunSpec], resumed_from: int) -> None: ...  # one run or a group
    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def epoch(self, spec: RunSpec, row: dict[str, float]) -> None: ...
    def run_finished(self, spec: RunSpec, status: str, detail: str) -> None: ...


@dataclass
class Outcome:
    """What one ``run_study`` call did, by run id."""

    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # done already, or another process has it
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)  # Ray: its worker died; continued from its checkpoint


def environment(engine: dict[str, Any]) -> dict[str, Any]:
    """Where and how a run trained: versions, hardware, and the engine options it used as resolved
    (``EngineOptions.record()``: their paths round differently in the last bits, docs/PERFORMANCE.md)
    with the engine-numerics version, for the report header and for provenance."""
    return {"mnistlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device_name": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), **engine}


@lru_cache(maxsize=4)
def _tensors(dataset: str, image: bool, train_size: int | None, test_size: int | None, device: str) -> TrainData:
    return load_tensors(dataset, image=image, device=device, train_size=train_size, test_size=test_size)


def data_for(spec: RunSpec, engine: EngineOptions | None = None) -> TrainData:
    """The run's dataset from this machine's verified cache, on the engine's device (kept per process)."""
    device = (engine or EngineOptions()).resolved().device
    return _tensors(spec.dataset, data_shape(spec), spec.train_size, spec.test_size, device)


def study_record(study: Study) -> dict[str, Any]:
    return {"name": study.name, "description": study.description, "path": study.path, "source": study.source}


def register(study: Study, store: Store) -> list[RunSpec]:
    specs = expand(study)
    store.register(study_record(study), [dict(s.to_json(), id=s.id) for s in specs])
    return specs


def run_study(study: Study, store: Store, reporter: Reporter | None = None,
              options: RunOptions | None = None, engine: EngineOptions | None = None) -> Outcome:
    """Train every run of ``study`` not yet done, as ``options`` say (retrying failed runs, grouping
    same-shape runs) with the engine computing as ``engine`` says."""
    reporter, options, engine = reporter or Silent(), options or RunOptions(), engine or EngineOptions()
    engine.check_available()
    if engine.threads:
        torch.set_num_threads(engine.threads)
    specs = register(study, store)
    status = {r["id"]: r["status"] for r in store.runs(study=study.name)}
    reporter.study_started(len(specs), sum(status.get(s.id) == "done" for s in specs))
    outcome = Outcome()
    for planned in plan(specs, options.group):
        for members in claim(store, planned, options, outcome):  # just before training: others take other groups
            for spec, final in _train(members, store, reporter, engine):
                if final in ("diverged", "failed"):
                    getattr(outcome, final).append(spec.id)
    return outcome


def claim(store: Store, planned: list[RunSpec], options: RunOptions,
          outcome: Outcome) -> list[list[tuple[RunSpec, Checkpoint | None]]]:
    """Take the runs of one planned group that are ours to train, each with the checkpoint it resumes
    from (a run left ``running`` by a dead process), split by that epoch (members resume together
    only from the same one); their history after it is dropped and ``outcome`` says what was taken."""
    claimed = []
    for spec in planned:
        previous = store.claim(spec.id, retry_failed=options.retry_failed)
        if previous is None:
            outcome.skipped.append(spec.id)
        else:
            claimed.append((spec, last_checkpoint(store, spec) if previous == "running" else None))
    by_epoch: dict[int, list[tuple[RunSpec, Checkpoint | None]]] = {}
    for spec, ck in claimed:
        by_epoch.setdefault(ck.epoch if ck else 0, []).append((spec, ck))
    for epoch, members in by_epoch.items():
        for spec, _ in members:
            store.reset_epochs(spec.id, keep=epoch)
            (outcome.resumed if epoch else outcome.trained).append(spec.id)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def plan(specs: list[RunSpec], group: bool = True) -> list[list[RunSpec]]:
    """Runs in study order, same-shape runs gathered into groups (at most ``MAX_GROUP``) when ``group``."""
    if not group:
        return [[s] for s in specs]
    groups: dict[Any, list[list[RunSpec]]] = {}
    order: list[list[RunSpec]] = []
    for spec in specs:
        key = group_key(spec)
        if key is None:
            order.append([spec])
            continue
        bucket = groups.setdefault(key, [])
        if not bucket or len(bucket[-1]) >= MAX_GROUP:
            bucket.append([])
            order.append(bucket[-1])
        bucket[-1].append(spec)
    return order


def last_checkpoint(store: Store, spec: RunSpec) -> Checkpoint | None:
    """The run's last committed epoch checkpoint; either engine resumes from it."""
    loaded = store.load_arrays(spec.id, "checkpoint")
    return checkpoint_from_arrays(*loaded) if loaded else None


def _train(members: list[tuple[RunSpec, Checkpoint | None]], store: Store, reporter: Reporter,
           engine: EngineOptions) -> list[tuple[RunSpec, str]]:
    """Train one run with the plain engine, or several same-shape runs as a group (same numbers)."""
    specs = [spec for spec, _ in members]
    resume = [ck for _, ck in members] if members[0][1] is not None else None

    def on_epoch(spec: RunSpec):
        def save(row: dict[str, float], ck: Checkpoint) -> None:
            commit_epoch(store, spec.id, row, *checkpoint_to_arrays(ck))
            reporter.epoch(spec, row)
        return save

    reporter.run_started(specs, resume[0].epoch if resume else 0)
    try:
        results = train_members(specs, resume, engine, on_epoch, reporter.batch)
    except KeyboardInterrupt:
        for spec in specs:
            store.release(spec.id)  # keeps the checkpoint: the next `run` resumes it
        raise
    except Exception as exc:  # noqa: BLE001 - one run's failure must not end the study
        record_failure(store, reporter, specs, failure_message(exc), traceback.format_exc(),
                       environment(engine.record()))
        return [(spec, "failed") for spec in specs]
    for result in results:
        save_result(store, result)
        reporter.run_finished(result.spec, result.status,
                              result.error or f"test accuracy {result.test_accuracy:.4f}")
    return [(r.spec, r.status) for r in results]


def train_members(specs: list[RunSpec], resume: list[Checkpoint] | None, engine: EngineOptions,
                  on_epoch: Callable[[RunSpec], Callable[[dict[str, float], Checkpoint], None]],
                  on_batch: Callable[[int, int, float, float], None] | None) -> list[RunResult]:
    """Train ``specs`` (one run, or a group of same-shape runs) on this machine's copy of their data;
    ``on_epoch(spec)`` gives the callback that commits ``spec``'s epochs."""
    data = data_for(specs[0], engine)
    if len(specs) > 1:
        return fit_group(specs, data, [Callbacks(on_epoch=on_epoch(s)) for s in specs],
                         resume=resume, on_batch=on_batch, options=engine)
    return [fit(specs[0], data, Callbacks(on_batch=on_batch, on_epoch=on_epoch(specs[0])),
                resume=resume[0] if resume else None, options=engine)]


def commit_epoch(store: Store, run_id: str, row: dict[str, float], arrays: dict[str, Any],
                 metadata: dict[str, str]) -> None:
    """One finished epoch into the store: its checkpoint (``checkpoint_to_arrays``) first, then its row."""
    store.save_arrays(run_id, "checkpoint", arrays, metadata)
    store.add_epoch(run_id, row)


def failure_message(exc: BaseException) -> str:
    """``Type: first line`` of an exception, as a failed run records it."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def record_failure(store: Store, reporter: Reporter, specs: list[RunSpec], message: str, trace: str,
                   env: dict[str, Any]) -> None:
    """Mark ``specs`` failed with ``message`` (their traceback kept as an artifact) and tell the reporter."""
    for spec in specs:
        store.finish(spec.id, "failed", error=message, environment=env)
        store.save_json(spec.id, "traceback", trace)
        reporter.run_finished(spec, "failed", message)


def save_result(store: Store, result: RunResult) -> None:
    """Artifacts first, then the status: a run marked done always has its weights."""
    run_id = result.spec.id
    if result.status == "done":
        store.save_arrays(run_id, "weights", {k: v.numpy() for k, v in result.weights.items()},
                          metadata={"run_id": run_id, "layers": "\n".join(result.spec.layers)})
        store.save_json(run_id, "confusion_train", result.confusion_train)
        store.save_json(run_id, "confusion_test", result.confusion_test)
        store.save_json(run_id, "mistakes", result.mistakes)
    store.finish(run_id, result.status, params=result.params, metrics=result.metrics,
                 seconds=result.seconds, error=result.error, environment=environment(result.engine))
    store.drop_artifact(run_id, "checkpoint")
