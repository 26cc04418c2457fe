"""The Ray executor on a local multi-node cluster (a head without CPUs and two worker nodes of one CPU
each, started and stopped by this module): the same numbers as inline; a worker killed mid-run
continues from its last committed checkpoint and ends with the same numbers; a worker that keeps
dying is recorded failed while the other runs finish; a killed driver resumes retraining nothing.

Both sides train with one thread (EngineOptions(threads=1)), so the same code gives the same bits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import MLP, tiny_study
from mnistlab.api import load_study, run
from mnistlab.engine.options import EngineOptions
from mnistlab.runner.driver import Silent
from mnistlab.runner.options import RunOptions
from mnistlab.store import Store

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed: pip install 'mnistlab[ray]'")
ONE_THREAD = EngineOptions(threads=1)
WIDE = ["Dense(256, activation='relu')", "Dense(10, activation='softmax')"]
DROP = ["Dense(32, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')"]


@pytest.fixture(scope="module")
def cluster():
    from mnistlab.runner.ray_executor import local_cluster

    threads = torch.get_num_threads()
    with local_cluster(nodes=2) as cluster:
        yield cluster
    torch.set_num_threads(threads)  # the runs here set one thread in this process


def on_ray(path, reporter=None, **options):
    return run(load_study(path), reporter=reporter, options=RunOptions(executor="ray", **options), engine=ONE_THREAD)


def inline_reference(write_study, text):
    path = write_study(text.replace('name = "tiny"', 'name = "ref"'), name="ref.toml")
    run(load_study(path), options=RunOptions(), engine=ONE_THREAD)
    return {r["id"]: r for r in Store.for_study(path).runs(study="ref")}, Store.for_study(path)


def same_numbers(store, ref_store, refs, study="tiny"):
    runs = store.runs(study=study)
    assert [r["status"] for r in runs] == ["done"] * len(refs)
    for r in runs:
        ref = refs[r["id"]]
        assert r["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6, abs=1e-7)
        assert r["test_accuracy"] == ref["test_accuracy"] and r["train_accuracy"] == ref["train_accuracy"]
        history, ref_history = store.history(r["id"]), ref_store.history(r["id"])
        assert [h["val_loss"] for h in history] == pytest.approx([h["val_loss"] for h in ref_history], rel=1e-6)
    return runs


@needs_ray
def test_same_results_as_inline_with_groups_and_workers_on_both_nodes(cluster, write_study, mnist):
    text = tiny_study(models={"a": MLP, "b": DROP, "c": ["Dense(10, activation='softmax')"]}, extra="repeats = 2")
    path = write_study(text)
    outcome = on_ray(path)
    assert len(outcome.trained) == 6 and not outcome.failed and not outcome.resubmitted
    refs, ref_store = inline_reference(write_study, text)
    runs = same_numbers(Store.for_study(path), ref_store, refs)
    assert {r["environment"]["executor"] for r in runs} == {"ray"}
    assert len({r["environment"]["ray_node"] for r in runs}) == 2  # both worker nodes trained
    assert {r["environment"]["threads"] for r in runs} == {1}
    assert all(Store.for_study(path).load_arrays(r["id"], "checkpoint") is None for r in runs)  # dropped when done
    assert on_ray(path).skipped == [r["id"] for r in runs]  # nothing trained twice


@needs_ray
def test_only_the_chosen_model_trains_on_the_cluster(cluster, write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP, "b": DROP}, epochs=1, extra="repeats = 2"))
    outcome = on_ray(path, models=("b",))
    assert len(outcome.trained) == 2 and not outcome.failed
    assert {(r["model"], r["status"]) for r in Store.for_study(path).runs(study="tiny")} == {("a", "pending"),
                                                                                           ("b", "done")}


class Killer(Silent):
    """Kills the worker of run ``target`` (os.kill of the pid its task reported) when ``when`` says so."""

    def __init__(self, target: str, after_epoch: int | None = None):
        self.target, self.after_epoch, self.pid, self.kills, self.notices = target, after_epoch, None, 0, []

    def worker_started(self, specs, host, pid):
        if specs[0].model == self.target:
            self.pid = pid
            if self.after_epoch is None:  # a worker that dies every time it starts this run
                self._kill()

    def epoch(self, spec, row):
        if spec.model == self.target and row["epoch"] == self.after_epoch and not self.kills:
            self._kill()  # the epoch is committed by now: the run must continue from it

    def note(self, text):
        self.notices.append(text)

    def _kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self.kills += 1


@needs_ray
def test_worker_killed_mid_run_continues_from_its_committed_checkpoint(cluster, write_study, mnist):
    text = tiny_study(models={"wide": WIDE, "other": DROP}, epochs=4, train_size=12_000)
    path = write_study(text)
    killer = Killer("wide", after_epoch=1)
    outcome = on_ray(path, killer)
    store = Store.for_study(path)
    wide = next(r for r in store.runs(study="tiny") if r["model"] == "wide")
    assert killer.kills == 1 and outcome.resubmitted == [wide["id"]] and not outcome.failed
    assert "WorkerCrashedError" in killer.notices[0] and "resubmitted from epoch 1" in killer.notices[0]
    assert [h["epoch"] for h in store.history(wide["id"])] == [1, 2, 3, 4]
    refs, ref_store = inline_reference(write_study, text)
    same_numbers(store, ref_store, refs)


@needs_ray
def test_a_worker_that_keeps_dying_is_recorded_failed_while_the_others_finish(cluster, write_study, mnist):
    path = write_study(tiny_study(models={"doomed": WIDE, "fine": MLP}, epochs=3, train_size=12_000))
    killer = Killer("doomed")
    outcome = on_ray(path, killer, resubmits=1)
    runs = {r["model"]: r for r in Store.for_study(path).runs(study="tiny")}
    assert killer.kills == 2 and outcome.failed == [runs["doomed"]["id"]]
    assert runs["doomed"]["status"] == "failed" and "WorkerCrashedError" in runs["doomed"]["error"]
    assert "given up after 1 resubmission" in runs["doomed"]["error"]
    assert runs["fine"]["status"] == "done"


@needs_ray
def test_killed_driver_resumes_with_nothing_finished_retrained(cluster, write_study, mnist):
    models = {f"m{i}": [f"Dense({40 + 8 * i}, activation='relu')", "Dense(10, activation='softmax')"] for i in range(4)}
    text = tiny_study(models=models, epochs=3, train_size=6000)
    path = write_study(text)
    driver = subprocess.Popen([sys.executable, "-m", "mnistlab.cli", "run", str(path), "--executor", "ray",
                               "--address", cluster.address, "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store, deadline = Store.for_study(path), time.time() + 300
    while time.time() < deadline and driver.poll() is None:  # one run done, another part way
        runs = store.runs(study="tiny")
        if any(r["status"] == "done" for r in runs) and any(r["status"] == "running" and 1 <= r["epochs_done"] < 3
                                                            for r in runs):
            break
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL, driver.stderr.read().decode()[-2000:]
    before = {r["id"]: r for r in store.runs(study="tiny")}
    done = sorted(i for i, r in before.items() if r["status"] == "done")
    partial = sorted(i for i, r in before.items() if r["status"] == "running" and r["epochs_done"] >= 1)
    kept = {i: store.history(i) for i in partial}
    assert done and partial

    outcome = on_ray(path)
    assert sorted(outcome.skipped) == done and set(partial) <= set(outcome.resumed)
    for i in partial:
        assert store.history(i)[:len(kept[i])] == kept[i]  # nothing lost
    after = {r["id"]: r for r in store.runs(study="tiny")}
    assert all(after[i]["finished"] == before[i]["finished"] for i in done)  # nothing retrained
    refs, ref_store = inline_reference(write_study, text)
    same_numbers(store, ref_store, refs)


def test_ray_executor_without_ray_says_how_to_install_it(write_study):
    path = write_study(tiny_study())
    code = ("import sys; sys.modules['ray'] = None; from mnistlab.cli import main; "
            f"sys.argv = ['mnistlab', 'run', {str(path)!r}, '--executor', 'ray']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # after the plan's line
    assert len(errors) == 1 and "pip install 'mnistlab[ray]'" in errors[0]


@pytest.mark.parametrize("args, message", [
    (["--address", "auto"], "--address auto names a Ray cluster; use it with --executor ray"),
    (["--executor", "ray", "--workers", "2"], "--workers is for --executor processes"),
    (["--executor", "dask"], "executor 'dask' is unknown; use one of inline, processes, ray"),
])
def test_run_options_that_do_not_fit_together_are_one_line_errors(write_study, args, message):
    from test_runner import mnistlab
    done = mnistlab("run", write_study(tiny_study()), *args, check=False)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_executor_ray_without_ray_is_refused_before_the_plan(write_study, monkeypatch, capsys):
    """Before, the plan line (and a calibration of every group) came first, then the missing Ray."""
    import importlib.util

    from hostile import invoke
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    path = write_study(tiny_study(epochs=1))
    code, _, err = invoke(capsys, "run", path, "--executor", "ray")
    assert code == 2 and "needs Ray, which is not installed: pip install 'mnistlab[ray]'" in err
    assert "plan:" not in err and "Traceback" not in err
    assert not (path.parent / "mnistlab.db").exists()  # nothing registered, nothing claimed


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_the_plan(write_study, capsys):
    from hostile import invoke
    path = write_study(tiny_study(epochs=1))
    code, _, err = invoke(capsys, "run", path, "--device", "cuda")
    assert code == 2 and "cuda" in err.lower() and "plan:" not in err and "Traceback" not in err


@needs_ray
def test_a_run_started_here_and_resumed_on_the_cluster_says_and_records_both_ways(cluster, write_study, mnist,
                                                                                   monkeypatch):
    """Started inline on two threads, stopped, continued on Ray's one-CPU tasks: the driver learns of
    the new stretch from the first epoch the worker sends, says so, and the run records both."""
    from hostile import interrupt_at
    path = write_study(tiny_study(models={"m": MLP}, epochs=3, train_size=3000))
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            run(load_study(path), engine=EngineOptions(threads=2))
    killer = Killer("none")  # kills nothing: keeps the notes
    outcome = on_ray(path, killer)
    (done,) = Store.for_study(path).runs(study="tiny")
    assert outcome.resumed == [done["id"]]
    assert [(s["from_epoch"], s["threads"]) for s in done["environment"]["trained_with"]] == [(1, 2), (2, 1)]
    assert [n for n in killer.notices if "resumes after epoch 1 with threads 2 -> 1" in n and done["id"] in n], \
        killer.notices


class TakeOver(Killer):
    """Another driver (another host) claims run ``target`` once its epoch ``after_epoch`` is committed."""

    def __init__(self, target: str, after_epoch: int, store: Store):
        super().__init__(target, after_epoch)
        self.store, self.taken = store, None

    def epoch(self, spec, row):
        if spec.model == self.target and row["epoch"] == self.after_epoch and self.taken is None:
            with self.store.engine.begin() as conn:
                conn.exec_driver_sql("UPDATE runs SET owner = 'elsewhere:1' WHERE id = ?", (spec.id,))
            self.taken = spec.id


@needs_ray
def test_a_run_another_driver_took_over_is_cancelled_here_and_the_others_finish(cluster, write_study, mnist):
    """The driver went on committing a taken-over run's epochs (and, a TakenOver error unhandled,
    would have cancelled every task of the study): that run's task is cancelled, the rest finish."""
    path = write_study(tiny_study(models={"wide": WIDE, "other": DROP}, epochs=4, train_size=12_000))
    taker = TakeOver("wide", 1, Store.for_study(path))
    outcome = on_ray(path, taker)
    store = Store.for_study(path)
    runs = {r["model"]: r for r in store.runs(study="tiny")}
    assert outcome.skipped == [taker.taken] == [runs["wide"]["id"]] and not outcome.failed
    assert (runs["wide"]["status"], runs["wide"]["owner"]) == ("running", "elsewhere:1")
    assert [h["epoch"] for h in store.history(taker.taken)] == [1]  # nothing after the takeover
    assert any(f"run {taker.taken}: taken over by elsewhere:1" in n for n in taker.notices), taker.notices
    assert runs["other"]["status"] == "done"
