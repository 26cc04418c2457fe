"""Runs on a Ray cluster: one Ray Core task per run, or per group of same-shape runs.

    mnistlab run study.toml --executor ray --address auto     # the cluster `ray start --head` began here
>>> outcome = run_on_ray(study, store, reporter, RunOptions(executor="ray", address="auto"), EngineOptions())

The driver (this process) alone writes the store, so SQLite is as safe as with one process. It plans
and claims the runs as the inline runner does (``driver.claim``) and submits each group as a task
asking for its resources (CPUs; one GPU when the study runs on CUDA). A worker loads the dataset from
its own verified cache (``driver.data_for``; once per worker process), trains with the same engine
(``driver.train_members``) and sends every finished epoch back through a queue actor on the driver's
node: the history row, and the checkpoint as numpy arrays by reference through the object store.
The driver commits each epoch and each final result with the inline runner's own steps
(``driver.commit_epoch``, ``driver.save_result``), and reports progress to the Reporter as locally.

Faults: a worker process or node that dies mid-run fails its task (WorkerCrashedError,
NodeDiedError, ...); the driver resubmits the run from its last *committed* checkpoint, up to
``RunOptions.resubmits`` times, then records it failed with the reason while the other runs go on.
Ray's own task retries are off: they would start the run over at epoch 0. A killed driver takes its
tasks with it (Ray ends a job's tasks when its driver goes); ``mnistlab run`` again resumes as
locally, from the store's claims and checkpoints, retraining nothing finished.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ..engine.checkpoint import Checkpoint, checkpoint_from_arrays, checkpoint_to_arrays
from ..engine.options import EngineOptions
from ..errors import OptionsError
from ..spec import RunSpec, Study
from ..store import Store, TakenOver
from .driver import (Outcome, Reporter, Silent, claim, commit_epoch, engine_change, environment, failure_message,
                     record_failure, register, release, resume_point, save_result, train_members, warn_same_name)
from .options import RunOptions
from .planning import chosen, epochs_done, plan

log = logging.getLogger(__name__)
# what a task's result raises when its worker process, its node or its objects are gone: resubmit
DIED = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OwnerDiedError", "ObjectLostError",
        "ActorDiedError")
WAIT_S = 0.1  # the driver's poll for messages and finished tasks


def import_ray():
    """The ``ray`` module, or a one-line OptionsError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionsError("--executor ray needs Ray, which is not installed: pip install 'mnistlab[ray]'") from None
    return ray


def run_on_ray(study: Study, store: Store, reporter: Reporter | None, options: RunOptions,
               engine: EngineOptions) -> Outcome:
    """Train every run of ``study`` not yet done as tasks on the Ray cluster at ``options.address``
    (``None``: ``$RAY_ADDRESS``, else a local cluster started for this call and stopped after it)."""
    ray = import_ray()
    started = connect(ray, options.address)
    try:
        return _Driver(ray, study, store, reporter or Silent(), options, engine).run()
    finally:
        if started:
            ray.shutdown()


@contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[Any]:
    """A Ray cluster on this machine, connected for the block: a head without CPUs and ``nodes``
    worker nodes, each its own raylet and object store as on separate machines. For trying
    ``--executor ray`` (and killing a node) without a real cluster; the tests and
    ``benchmarks/executors.py`` use it."""
    ray = import_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node)
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local one; True when this call connected."""
    if ray.is_initialized():  # the caller (a notebook, a test) connected already: use that cluster
        return False
    local = address is None and not os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, logging_level=logging.WARNING,
                 **({"include_dashboard": False} if local else {}))
    except Exception as exc:  # noqa: BLE001 - Ray raises plain Exceptions for a node that did not start
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if local:
            raise OptionsError(f"could not start a local Ray cluster: {why}") from None
        raise OptionsError(f"no Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {why}; start one "
                           "with `ray start --head` (docs/DISTRIBUTED.md)") from None
    return True


def task_resources(ray, engine: EngineOptions) -> tuple[EngineOptions, dict[str, Any]]:
    """The engine options workers use ("auto" decided by the cluster's GPUs, one thread unless said) and
    what each task asks Ray for."""
    gpus = ray.cluster_resources().get("GPU", 0)
    device = ("cuda" if gpus else "cpu") if engine.device == "auto" else engine.device
    if device == "cuda" and not gpus:
        raise OptionsError("device 'cuda' was asked for, but the Ray cluster has no GPU; use --device cpu, "
                           "or start nodes with GPUs (`ray start --num-gpus 1`)")
    engine = replace(engine, device=device, threads=engine.threads or 1)
    return engine, {"num_cpus": engine.threads, "num_gpus": 1 if device == "cuda" else 0, "max_retries": 0}


def train_task(specs: list[RunSpec], resume: list[tuple[list, dict[str, str]]] | None, engine: EngineOptions,
               inbox, tag: int) -> tuple:
    """The Ray task: train ``specs`` on this worker, each epoch sent to the driver through ``inbox``.
    Returns ("done", results) or ("failed", message, traceback, environment)."""
    import ray
    import torch

    torch.set_num_threads(engine.threads or 1)
    host = socket.gethostname()
    inbox.put(("started", tag, host, os.getpid()))
    checkpoints = [checkpoint_from_arrays(ray.get(refs[0]), meta) for refs, meta in resume] if resume else None

    def on_epoch(spec: RunSpec):
        def send(row: dict[str, float], ck: Checkpoint) -> None:
            arrays, metadata = checkpoint_to_arrays(ck)
            inbox.put(("epoch", tag, spec.id, row, [ray.put(arrays)], metadata))  # in a list: stays a reference
        return send

    def on_batch(batch: int, batches: int, loss: float, accuracy: float) -> None:
        inbox.put(("batch", tag, batch, batches, loss, accuracy))

    where = {"executor": "ray", "node": host, "ray_node": ray.get_runtime_context().get_node_id()}
    try:
        engine.check_available()
        results = train_members(specs, checkpoints, engine, on_epoch, on_batch)
    except Exception as exc:  # noqa: BLE001 - recorded by the driver as the inline runner records it
        return "failed", failure_message(exc), traceback.format_exc(), environment(engine.record()) | where
    for result in results:  # provenance of the machine that trained it, not the driver's
        result.engine = environment(result.engine) | where
    return "done", results


@dataclass
class _Task:
    """One submitted task: its runs, the epoch it resumed after, how often it was resubmitted."""

    specs: list[RunSpec]
    epoch: int
    resumed: bool = False  # its runs continued from a checkpoint of an earlier `run` (not a resubmission)
    tries: int = 0
    where: str = ""  # "host pid N" once its worker started it
    committed: dict[str, int] = field(default_factory=dict)  # run id -> epochs committed to the store

    @property
    def label(self) -> str:
        first = self.specs[0]
        return first.label + (f" r{first.repeat}" if len(self.specs) == 1 else f" +{len(self.specs) - 1} grouped")


class _Driver:
    def __init__(self, ray, study: Study, store: Store, reporter: Reporter, options: RunOptions,
                 engine: EngineOptions):
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.study, self.store, self.reporter, self.options = ray, study, store, reporter, options
        self.engine, self.resources = task_resources(ray, engine)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.inbox = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})  # lives while the driver does
        self.remote = ray.remote(train_task)
        self.died = tuple(getattr(ray.exceptions, name) for name in DIED if hasattr(ray.exceptions, name))
        self.tasks: dict[int, _Task] = {}  # by tag, while in flight
        self.refs: dict[Any, int] = {}  # the task's result reference -> its tag
        self.tags = itertools.count()
        self.current: int | None = None  # the task whose batches the progress bar shows
        self.outcome = Outcome()

    def run(self) -> Outcome:
        warn_same_name(self.study, self.store, self.reporter)
        specs = chosen(register(self.study, self.store), self.options.models)
        rows = self.store.runs(study=self.study.name)
        status = {r["id"]: r["status"] for r in rows}
        self.reporter.study_started(len(specs), sum(status.get(s.id) == "done" for s in specs))
        try:
            # tasks start in this order: the most work left first
            for planned in plan(specs, self.options.group, longest_first=True, done=epochs_done(rows)):
                for members in claim(self.store, planned, self.options, self.outcome, self.reporter):
                    self.submit([s for s, _ in members], [ck for _, ck in members], tries=0,
                                resumed=members[0][1] is not None)
            while self.refs:
                self.poll()
        except BaseException:  # Ctrl-C or a store error: stop the tasks, keep their checkpoints to resume
            for ref, tag in self.refs.items():
                self.ray.cancel(ref, force=True)
                release(self.store, self.tasks[tag].specs)
            raise
        finally:
            self.inbox.shutdown()
        return self.outcome

    def submit(self, specs: list[RunSpec], checkpoints: list[Checkpoint | None], tries: int, resumed: bool) -> None:
        resume = None
        if checkpoints[0] is not None:  # by reference: one copy in the object store, read by the worker
            resume = [([self.ray.put(arrays)], meta) for arrays, meta in map(checkpoint_to_arrays, checkpoints)]
        epoch = checkpoints[0].epoch if checkpoints[0] is not None else 0
        tag = next(self.tags)
        self.tasks[tag] = task = _Task(specs, epoch, resumed, tries, committed={s.id: epoch for s in specs})
        ref = self.remote.options(**self.resources, name=task.label[:100]).remote(
            specs, resume, self.engine, self.inbox, tag)
        self.refs[ref] = tag

    def poll(self) -> None:
        busy = self.drain()
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=0 if busy else WAIT_S)
        if ready:
            self.drain()  # a task's last epochs were queued before it returned: commit them first
        for ref in ready:
            if ref in self.refs:  # not given up while its last epochs were committed
                self.finished(ref)

    def drain(self) -> bool:
        waiting = self.inbox.qsize()
        for message in self.inbox.get_nowait_batch(waiting) if waiting else []:
            self.handle(message)
        return bool(waiting)

    def handle(self, message: tuple) -> None:
        kind, tag, *body = message
        task = self.tasks.get(tag)
        if task is None:  # from an attempt that ended (died and was resubmitted, or finished)
            return
        if kind == "started":
            host, pid = body
            task.where, self.current = f"{host} pid {pid}", tag
            self.reporter.run_started(task.specs, task.epoch)
            _tell(self.reporter, "worker_started", task.specs, host, pid)
        elif kind == "batch" and tag == self.current:
            self.reporter.batch(*body)
        elif kind == "epoch":
            self.commit(task, *body)

    def commit(self, task: _Task, run_id: str, row: dict[str, float], refs: list, metadata: dict[str, str]) -> None:
        if row["epoch"] != task.committed[run_id] + 1:  # an earlier epoch was lost with its worker
            return
        try:
            arrays = self.ray.get(refs[0])
        except self.ray.exceptions.RayError as exc:  # its worker died before the driver fetched it
            log.info("epoch %s of run %s lost with its worker: %s", row["epoch"], run_id, type(exc).__name__)
            return
        try:
            commit_epoch(self.store, run_id, row, arrays, metadata)
        except TakenOver as exc:  # another driver trains it now: stop this task, release its other runs
            return self.give_up(task, exc)
        task.committed[run_id] = int(row["epoch"])
        stretches = json.loads(metadata.get("trained_with", "[]"))  # the worker's: a new one begins here?
        if len(stretches) > 1 and stretches[-1]["from_epoch"] == row["epoch"]:
            if note := engine_change(run_id, int(row["epoch"]) - 1, stretches[-2], stretches[-1]):
                self.reporter.note(note)
        self.reporter.epoch(next(s for s in task.specs if s.id == run_id), row)

    def give_up(self, task: _Task, exc: TakenOver) -> None:
        """``task`` lost a run to another process (TakenOver): cancel it; its other runs are released."""
        tag = next(t for t, known in self.tasks.items() if known is task)
        ref = next(r for r, t in self.refs.items() if t == tag)
        self.ray.cancel(ref, force=True)
        del self.tasks[tag], self.refs[ref]
        self.settle(task, exc)

    def settle(self, task: _Task, exc: TakenOver) -> None:
        release(self.store, task.specs)  # only this driver's claims: the taken run stays the other's
        self.reporter.note(str(exc))
        self.outcome.skipped += [s.id for s in task.specs]

    def finished(self, ref) -> None:
        task = self.tasks.pop(self.refs.pop(ref))
        try:
            self.conclude(task, ref)
        except TakenOver as exc:  # between its last epoch and its result
            self.settle(task, exc)

    def conclude(self, task: _Task, ref) -> None:
        try:
            result = self.ray.get(ref)
        except self.died as exc:
            return self.resubmit(task, exc)
        except self.ray.exceptions.RayError as exc:  # the task could not run at all
            cause = getattr(exc, "cause", None) or exc
            result = ("failed", failure_message(cause), str(exc), self.environment())
        if result[0] == "failed":
            _, message, trace, env = result
            record_failure(self.store, self.reporter, task.specs, message, trace, env)
            self.outcome.failed += [s.id for s in task.specs]
            return
        for run in result[1]:
            save_result(self.store, run)
            self.reporter.run_finished(run.spec, run.status, run.error or f"test accuracy {run.test_accuracy:.4f}")
            if run.status == "diverged":
                self.outcome.diverged.append(run.spec.id)
            (self.outcome.resumed if task.resumed else self.outcome.trained).append(run.spec.id)

    def environment(self) -> dict[str, Any]:
        """What a run that failed on the cluster records: the options asked for (where it ran is unknown)."""
        return dict(environment(self.engine.record()), executor="ray")

    def resubmit(self, task: _Task, exc: BaseException) -> None:
        """Continue ``task``'s runs from their last committed checkpoints, or record them failed."""
        reason = f"{type(exc).__name__}: the worker ({task.where or 'not started yet'}) died"
        if task.tries >= self.options.resubmits:
            message = f"{reason}; given up after {task.tries} resubmission(s)"
            record_failure(self.store, self.reporter, task.specs, message, str(exc), self.environment())
            self.outcome.failed += [s.id for s in task.specs]
            return
        self.outcome.resubmitted += [s.id for s in task.specs]
        by_epoch: dict[int, list[tuple[RunSpec, Checkpoint | None]]] = {}
        for spec in task.specs:  # rows past the checkpoint are forgotten, missing ones restored from it
            ck = resume_point(self.store, spec, self.reporter)
            by_epoch.setdefault(ck.epoch if ck else 0, []).append((spec, ck))
        for epoch, members in sorted(by_epoch.items()):
            self.reporter.note(f"{task.label}: {reason}; resubmitted from epoch {epoch} "
                               f"(attempt {task.tries + 2} of {self.options.resubmits + 1})")
            self.submit([s for s, _ in members], [ck for _, ck in members], task.tries + 1, task.resumed)


def _tell(reporter: Reporter, hook: str, *args: Any) -> None:
    """Call an optional Reporter method (``worker_started(specs, host, pid)``) where it has one."""
    method = getattr(reporter, hook, None)
    if method is not None:
        method(*args)
