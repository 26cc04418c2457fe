"""Run a study against a store: plan what is left, train it, write every result as it arrives.

>>> outcome = run_study(load_study("studies/quick.toml"), Store.for_study("studies/quick.toml"))

Runs already done (same id) are skipped; failed and diverged runs are retried only with
``retry_failed``; a run left ``running`` by a process that died is resumed from its last epoch
checkpoint. The store is written only here, in the driving process.
"""

from __future__ import annotations

import os
import platform
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import torch

from . import __version__
from .data import TrainData, load_tensors
from .spec import RunSpec, Study, expand
from .store import Store
from .train import (Callbacks, Checkpoint, RunResult, checkpoint_from_arrays, checkpoint_to_arrays,
                    data_shape, fit)


class Reporter(Protocol):
    """What the runner tells the person watching (the CLI implements it with rich)."""

    def study_started(self, total: int, done: int) -> None: ...
    def run_started(self, spec: RunSpec, index: int, resumed_from: int) -> None: ...
    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def epoch(self, row: dict[str, float]) -> None: ...
    def run_finished(self, spec: RunSpec, status: str, detail: str) -> None: ...


class Silent:
    def study_started(self, total: int, done: int) -> None: ...
    def run_started(self, spec: RunSpec, index: int, resumed_from: int) -> None: ...
    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def epoch(self, row: dict[str, float]) -> None: ...
    def run_finished(self, spec: RunSpec, status: str, detail: str) -> None: ...


@dataclass
class Outcome:
    """What one ``run_study`` call did, by run id."""

    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # done already, or another process has it
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def environment() -> dict[str, Any]:
    """Where a run trained: versions and hardware, for the report header."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (platform.processor() or platform.machine())
    return {"mnistlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": "cuda" if torch.cuda.is_available() else "cpu",
            "device_name": device, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


@lru_cache(maxsize=4)
def _tensors(dataset: str, image: bool, train_size: int | None, test_size: int | None) -> TrainData:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_tensors(dataset, image=image, device=device, train_size=train_size, test_size=test_size)


def data_for(spec: RunSpec) -> TrainData:
    return _tensors(spec.dataset, data_shape(spec), spec.train_size, spec.test_size)


def study_record(study: Study) -> dict[str, Any]:
    return {"name": study.name, "description": study.description, "path": study.path, "source": study.source}


def register(study: Study, store: Store) -> list[RunSpec]:
    specs = expand(study)
    store.register(study_record(study), [dict(s.to_json(), id=s.id) for s in specs])
    return specs


def run_study(study: Study, store: Store, reporter: Reporter | None = None,
              retry_failed: bool = False) -> Outcome:
    """Train every run of ``study`` not yet done; return what happened."""
    reporter = reporter or Silent()
    specs = register(study, store)
    status = {r["id"]: r["status"] for r in store.runs(study=study.name)}
    reporter.study_started(len(specs), sum(status.get(s.id) == "done" for s in specs))
    outcome = Outcome()
    for index, spec in enumerate(specs):
        previous = store.claim(spec.id, retry_failed=retry_failed)
        if previous is None:
            outcome.skipped.append(spec.id)
            continue
        resume = _checkpoint(store, spec) if previous == "running" else None
        store.reset_epochs(spec.id, keep=resume.epoch if resume else 0)
        reporter.run_started(spec, index, resume.epoch if resume else 0)
        (outcome.resumed if resume else outcome.trained).append(spec.id)
        final = _train_one(spec, store, reporter, resume)
        if final == "diverged":
            outcome.diverged.append(spec.id)
        elif final == "failed":
            outcome.failed.append(spec.id)
    return outcome


def _checkpoint(store: Store, spec: RunSpec) -> Checkpoint | None:
    loaded = store.load_arrays(spec.id, "checkpoint")
    return checkpoint_from_arrays(*loaded) if loaded else None


def _train_one(spec: RunSpec, store: Store, reporter: Reporter, resume: Checkpoint | None) -> str:
    def on_epoch(row: dict[str, float], ck: Checkpoint) -> None:
        store.save_arrays(spec.id, "checkpoint", *checkpoint_to_arrays(ck))  # weights first, then the row
        store.add_epoch(spec.id, row)
        reporter.epoch(row)

    callbacks = Callbacks(on_batch=reporter.batch, on_epoch=on_epoch)
    try:
        result = fit(spec, data_for(spec), callbacks, resume=resume)
    except KeyboardInterrupt:
        store.release(spec.id)  # keeps the checkpoint: the next `run` resumes it
        raise
    except Exception as exc:  # noqa: BLE001 - one run's failure must not end the study
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        store.finish(spec.id, "failed", error=message, environment=environment())
        store.save_json(spec.id, "traceback", traceback.format_exc())
        reporter.run_finished(spec, "failed", message)
        return "failed"
    save_result(store, result)
    reporter.run_finished(spec, result.status, result.error or f"test accuracy {result.test_accuracy:.4f}")
    return result.status


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
                 seconds=result.seconds, error=result.error, environment=environment())
    store.drop_artifact(run_id, "checkpoint")

