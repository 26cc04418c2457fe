"""Where a study's runs execute: in this process, in a pool of local worker processes, or as tasks
on a Ray cluster (``ray_executor``: the driver alone writes the store).

The store's atomic claims make the pool simple: each worker plans the same study against the
same store and trains whatever it claims first, with ``cores / workers`` torch threads. Small
models that do not group use both cores better as two one-thread runs than as one two-thread run.

>>> outcome = EXECUTORS["processes"](study, store, None, RunOptions(workers=2), EngineOptions())
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import replace
from typing import Callable

from ..engine.check import check_study
from ..engine.options import EngineOptions
from ..errors import StudyError
from ..processes import die_with_parent
from ..spec import Study, parse_study
from ..store import Store
from .driver import NotesOnly, Outcome, Reporter, run_study, warn_same_name
from .estimate import worker_threads
from .options import RunOptions
from .ray_executor import run_on_ray



def inline(study: Study, store: Store, reporter: Reporter | None, options: RunOptions,
           engine: EngineOptions) -> Outcome:
    """Train in this process (the default)."""
    return run_study(study, store, reporter, options, engine)


def processes(study: Study, store: Store, reporter: Reporter | None, options: RunOptions,
              engine: EngineOptions) -> Outcome:
    """Train in ``options.workers`` local processes sharing the store; returns their outcomes merged."""
    if store.engine.url.get_backend_name() == "sqlite" and store.engine.url.database in (None, "", ":memory:"):
        raise StudyError("a process pool needs a store file or server, not an in-memory database")
    engine.check_available()  # here, not once per worker
    workers = options.workers
    if reporter is not None:  # before any worker registers the study under this file
        warn_same_name(study, store, reporter)
    engine = replace(engine, threads=engine.threads or worker_threads(workers))
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    args = [(study.path, study.source, store.url, str(store.artifacts_dir), options, engine)] * workers
    with context.Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        outcomes = pool.starmap(_worker, args)
    merged = Outcome()
    for outcome in outcomes:
        for field in ("trained", "resumed", "diverged", "failed"):
            getattr(merged, field).extend(getattr(outcome, field))
    done_here = set(merged.trained) | set(merged.resumed)
    merged.skipped = sorted({i for o in outcomes for i in o.skipped} - done_here)
    return merged


def _worker(path: str | None, source: str, url: str, artifacts: str, options: RunOptions,
            engine: EngineOptions) -> Outcome:
    study = parse_study(source, path or "<study>", yes=True)  # the parent accepted its run count
    check_study(study)
    return run_study(study, Store(url, artifacts), NotesOnly(), options, engine)  # fallbacks, resumes: said


def ray(study: Study, store: Store, reporter: Reporter | None, options: RunOptions,
        engine: EngineOptions) -> Outcome:
    """Train as Ray tasks on the cluster at ``options.address`` (needs ``pip install 'mnistlab[ray]'``)."""
    return run_on_ray(study, store, reporter, options, engine)


EXECUTORS: dict[str, Callable[..., Outcome]] = {"inline": inline, "processes": processes, "ray": ray}
