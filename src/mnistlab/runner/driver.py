"""Run a study against a store: plan what is left, train it, write every result as it arrives.

>>> outcome = run_study(load_study("studies/quick.toml"), Store.for_study("studies/quick.toml"))

Runs already done (same id) are skipped; failed and diverged runs are retried only with
``retry_failed``; a run left ``running`` by a process that died is resumed from its last epoch
checkpoint. The store is written only here, in the driving process.
"""

from __future__ import annotations

import os
import platform
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Protocol

import torch

from ..version import __version__
from ..data import TrainData, load_tensors
from ..engine.checkpoint import Checkpoint, checkpoint_from_arrays, checkpoint_to_arrays
from ..engine.fit import Callbacks, RunResult, data_shape, fit
from ..engine.group import fit_group
from ..engine.options import EngineOptions
from ..errors import DamagedArtifact, DataError, StoreError
from ..processes import priority
from ..spec import RunSpec, Study, expand
from ..store import Store, TakenOver
from .options import RunOptions
from .planning import chosen, epochs_done, plan


class Reporter(Protocol):
    """What the runner tells the person watching (the CLI implements it with rich)."""

    def study_started(self, total: int, done: int) -> None: ...
    def run_started(self, specs: list[RunSpec], resumed_from: int) -> None: ...  # one run or a group
    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def epoch(self, spec: RunSpec, row: dict[str, float]) -> None: ...
    def run_finished(self, spec: RunSpec, status: str, detail: str) -> None: ...
    def note(self, text: str) -> None: ...  # one line the person should read (a fallback, a warning)


class Silent:
    def study_started(self, total: int, done: int) -> None: ...
    def run_started(self, specs: list[RunSpec], resumed_from: int) -> None: ...  # one run or a group
    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def epoch(self, spec: RunSpec, row: dict[str, float]) -> None: ...
    def run_finished(self, spec: RunSpec, status: str, detail: str) -> None: ...
    def note(self, text: str) -> None: ...


class NotesOnly(Silent):
    """A worker process's reporter: no progress, every note on stderr as plain text (never markup)."""

    def note(self, text: str) -> None:
        print(f"note: {text}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    """What one ``run_study`` call did, by run id."""

    trained: list[str] = field(default_factory=list)  # trained to an end here (done or diverged) from scratch
    resumed: list[str] = field(default_factory=list)  # ... from a checkpoint
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
            "cpus": os.cpu_count(), "priority": priority(), **engine}


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
    same-shape runs) with the engine computing as ``engine`` says.

    Every dataset the runs left to train need is loaded first: a data problem raises DataError
    before any run is claimed, and no run is charged with it."""
    reporter, options, engine = reporter or Silent(), options or RunOptions(), engine or EngineOptions()
    engine.check_available()
    if engine.threads:
        torch.set_num_threads(engine.threads)
    warn_same_name(study, store, reporter)
    specs = chosen(register(study, store), options.models)
    rows = store.runs(study=study.name)
    status = {r["id"]: r["status"] for r in rows}
    startable = {"pending", "running"} | ({"failed", "diverged", "damaged"} if options.retry_failed else set())
    preload([s for s in specs if status.get(s.id) in startable], engine)
    reporter.study_started(len(specs), sum(status.get(s.id) == "done" for s in specs))
    outcome = Outcome()
    for planned in plan(specs, options.group, longest_first=options.workers > 1, done=epochs_done(rows)):
        for members in claim(store, planned, options, outcome, reporter):  # just before training
            resumed = members[0][1] is not None
            for spec, final in _train(members, store, reporter, engine):
                if final in ("diverged", "failed"):
                    getattr(outcome, final).append(spec.id)
                if final == "taken over":
                    outcome.skipped.append(spec.id)
                elif final != "failed":
                    (outcome.resumed if resumed else outcome.trained).append(spec.id)
    return outcome


def claim(store: Store, planned: list[RunSpec], options: RunOptions, outcome: Outcome,
          reporter: Reporter) -> list[list[tuple[RunSpec, Checkpoint | None]]]:
    """Take the runs of one planned group that are ours to train (claimed just before training, so
    another process can take other groups), each with the checkpoint it resumes from (a run left
    ``running`` by a dead process), split by that epoch: members resume together only from the same
    one. Runs done already or taken by another process go to ``outcome.skipped``."""
    claimed = []
    for spec in planned:
        previous = store.claim(spec.id, retry_failed=options.retry_failed)
        if previous is None:
            outcome.skipped.append(spec.id)
        else:
            resume = resume_point(store, spec, reporter) if previous == "running" else fresh_start(store, spec)
            claimed.append((spec, resume))
    by_epoch: dict[int, list[tuple[RunSpec, Checkpoint | None]]] = {}
    for spec, ck in claimed:
        by_epoch.setdefault(ck.epoch if ck else 0, []).append((spec, ck))
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def preload(specs: list[RunSpec], engine: EngineOptions | None = None) -> None:
    """Load (fetch, verify) every dataset and slice ``specs`` train on, once: DataError stops the study."""
    for spec in specs:
        data_for(spec, engine)


def warn_same_name(study: Study, store: Store, reporter: Reporter) -> None:
    """Another study file with this ``name`` shares its rows in the store: say so (a moved or copied
    file, with the same text, is the same study)."""
    known = store.study(study.name)
    if known and known["path"] and study.path and known["path"] != study.path and known["source"] != study.source:
        reporter.note(f"study {study.name!r} in this store was last run from {known['path']}, a different file: "
                      f"both share its rows and table; give one another `name` to keep them apart")


def fresh_start(store: Store, spec: RunSpec) -> None:
    """A run trained again from the start (pending, or retried): no rows or checkpoints of before."""
    store.drop_checkpoints(spec.id)
    store.reset_epochs(spec.id, keep=0)


def resume_point(store: Store, spec: RunSpec, reporter: Reporter) -> Checkpoint | None:
    """The run's newest good checkpoint (each is verified by its SHA-256), else the one before it,
    else None (a fresh start); a fallback is said in one line. The history rows behind the
    checkpoint are made whole from its own history; rows after it are forgotten."""
    found, problems = None, []
    for kind in ("checkpoint", "checkpoint_previous"):
        try:
            loaded = store.load_arrays(spec.id, kind)
            found = checkpoint_from_arrays(*loaded) if loaded else None
        except (DamagedArtifact, KeyError, ValueError) as exc:  # KeyError, ValueError: its metadata
            problems.append(str(exc) if isinstance(exc, DamagedArtifact) else f"run {spec.id}: its {kind} is unreadable")
            store.drop_artifact(spec.id, kind)
            continue
        if found is not None:
            break
    keep = found.epoch if found else 0
    if problems:
        then = f"resuming from its epoch-{keep} checkpoint" if found else "training it again from the start"
        reporter.note("; ".join(problems) + f"; {then}")
    restored = store.restore_epochs(spec.id, found.history if found else [], keep)
    if restored:
        reporter.note(f"run {spec.id}: {restored} history row(s) restored from its epoch-{keep} checkpoint")
    return found


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
    for spec, ck in members if resume else []:
        if note := engine_change(spec.id, ck.epoch, (ck.trained_with or [None])[-1], stretch_record(engine)):
            reporter.note(note)
    try:
        try:
            results = train_members(specs, resume, engine, on_epoch, reporter.batch)
        except (DataError, StoreError):  # the study's problems (data, store, disk), not the runs'
            raise
        except Exception as exc:  # noqa: BLE001 - one run's failure must not end the study
            record_failure(store, reporter, specs, failure_message(exc), traceback.format_exc(),
                           environment(engine.record()))
            return [(spec, "failed") for spec in specs]
        for result in results:
            save_result(store, result)
            reporter.run_finished(result.spec, result.status,
                                  result.error or f"test accuracy {result.test_accuracy:.4f}")
    except (KeyboardInterrupt, DataError, StoreError) as exc:
        release(store, specs)  # they keep their checkpoints: the next `run` resumes them (a taken one is not ours)
        if not isinstance(exc, TakenOver):
            raise
        reporter.note(str(exc) + ("; the other runs of its group are released for the next `run`"
                                  if len(specs) > 1 else ""))  # another process trains it now
        return [(spec, "taken over") for spec in specs]
    return [(r.spec, r.status) for r in results]


def release(store: Store, specs: list[RunSpec]) -> None:
    """Give ``specs`` back unfinished, resumable from their checkpoints; where the store cannot be
    written (the error being raised may be that), their claims end with this process instead."""
    for spec in specs:
        try:
            store.release(spec.id)
        except StoreError:
            return


def train_members(specs: list[RunSpec], resume: list[Checkpoint] | None, engine: EngineOptions,
                  on_epoch: Callable[[RunSpec], Callable[[dict[str, float], Checkpoint], None]],
                  on_batch: Callable[[int, int, float, float], None] | None) -> list[RunResult]:
    """Train ``specs`` (one run, or a group of same-shape runs) on this machine's copy of their data;
    ``on_epoch(spec)`` gives the callback that commits ``spec``'s epochs (inline, or a Ray worker's).

    Each checkpoint carries how every stretch of its run's epochs was computed, and a run resumed with
    other engine settings, versions or threads (which round differently) records them all in its
    result's ``engine["trained_with"]``: one run, one record of how its numbers were made."""
    data = data_for(specs[0], engine)
    used = stretch_record(engine.on(data.x_train.device))
    trained = {s.id: stretches(ck, used) for s, ck in zip(specs, resume or [None] * len(specs))}

    def stamped(spec: RunSpec) -> Callable[[dict[str, float], Checkpoint], None]:
        commit = on_epoch(spec)

        def save(row: dict[str, float], ck: Checkpoint) -> None:
            ck.trained_with = trained[spec.id]
            commit(row, ck)
        return save

    if len(specs) > 1:
        results = fit_group(specs, data, [Callbacks(on_epoch=stamped(s)) for s in specs],
                            resume=resume, on_batch=on_batch, options=engine)
    else:
        results = [fit(specs[0], data, Callbacks(on_batch=on_batch, on_epoch=stamped(specs[0])),
                       resume=resume[0] if resume else None, options=engine)]
    for result in results:
        kept = trained[result.spec.id]
        if len(kept) > 1 or kept[0]["from_epoch"] > 1:  # resumed differently, or from an older file
            result.engine = {**result.engine, "trained_with": kept}
    return results


def stretch_record(engine: EngineOptions) -> dict[str, Any]:
    """What a stretch of epochs is computed with, as far as its numbers go: the versions and the
    engine options as resolved (device, precision, threads, kernels)."""
    return {"mnistlab": __version__, "torch": torch.__version__, **engine.record()}


def stretches(resume: Checkpoint | None, used: dict[str, Any]) -> list[dict[str, Any]]:
    """The stretches of a run's epochs by how they were computed, with the one about to train: the
    checkpoint's list, extended when ``used`` differs from its last stretch."""
    before = list(resume.trained_with) if resume is not None else []
    if before and not changes(before[-1], used):
        return before
    return before + [{"from_epoch": (resume.epoch if resume is not None else 0) + 1, **used}]


def changes(last: dict[str, Any], used: dict[str, Any]) -> list[str]:
    """``threads 1 -> 2`` for each setting ``used`` gives otherwise than the stretch ``last`` recorded;
    a setting an older mnistlab did not record (``cpu_capability``) is unknown there, not a change."""
    return [f"{k} {last[k]} -> {v}" for k, v in used.items() if k != "from_epoch" and k in last and last[k] != v]


def engine_change(run_id: str, after: int, last: dict[str, Any] | None, used: dict[str, Any]) -> str | None:
    """One line when a run resumes after epoch ``after`` with settings ``used`` other than its last
    stretch's (``last``; None: not recorded), else None."""
    if not last:
        return None
    changed = changes(last, used)
    if not changed:
        return None
    return (f"run {run_id}: resumes after epoch {after} with {', '.join(changed)}; both are recorded "
            f"with the run (`mnistlab show {run_id[:8]}`), whose numbers may differ in the last bits from "
            "one trained one way throughout")


def commit_epoch(store: Store, run_id: str, row: dict[str, float], arrays: dict[str, Any],
                 metadata: dict[str, str]) -> None:
    """One finished epoch into the store: the checkpoint file first (a new name each epoch), then its
    record and the row in one transaction: a kill at any point leaves the previous epoch's pair, or this one's."""
    path, sha = store.write_artifact(run_id, f"checkpoint-{int(row['epoch'])}", arrays, metadata)
    store.commit_epoch(run_id, row, "checkpoint", path, sha)


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
        if result.predictions:  # the artifacts table, no schema change: a few KiB a run
            store.save_arrays(run_id, "predictions", result.predictions)
    if result.history:  # the epochs table has fixed columns: the learning rate of each epoch lives here
        store.save_json(run_id, "lr", [row.get("lr") for row in result.history])
    ending = {"early_stopping": result.stopped} if result.stopped else {}  # tables show where it stopped
    store.finish(run_id, result.status, params=result.params, metrics=result.metrics,
                 seconds=result.seconds, error=result.error, environment=environment(result.engine) | ending)
    store.drop_checkpoints(run_id)

