"""Nothing lost, nothing silently wrong: copied and moved stores, artifacts verified by SHA-256,
damaged checkpoints and weights, a report of a study with a damaged run (docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
import sqlalchemy as sa

from hostile import (DAMAGE, TWO, Notes, copy, digest, finals, flip, interrupted, invoke, reference,  # noqa: F401
                     same_numbers, train, write)
from mnistlab.errors import DamagedArtifact
from mnistlab.report.html import write_report
from mnistlab.store import SCHEMA_VERSION, Store


# ---------------------------------------------------------------- copied and moved stores
def test_copied_store_trains_nothing_again_and_leaves_the_original_intact(tmp_path, reference):
    original = write(tmp_path / "original")
    train(original)
    before = digest(original.parent)
    duplicate = copy(original.parent, tmp_path / "copy") / "study.toml"
    outcome = train(duplicate)
    assert outcome.trained == [] and outcome.resumed == [] and len(outcome.skipped) == 1
    store = Store.for_study(duplicate)
    run_id = store.runs()[0]["id"]
    assert store.load_arrays(run_id, "weights") is not None
    assert digest(original.parent) == before  # the copy read and wrote only its own files
    assert train(original).trained == []


def test_copy_of_an_interrupted_store_resumes_from_its_own_checkpoints(tmp_path, monkeypatch, reference):
    original = write(tmp_path / "original")
    interrupted(original, monkeypatch, epoch=2)
    before = digest(original.parent)
    assert any("checkpoint-2" in name for name in before)
    duplicate = copy(original.parent, tmp_path / "copy") / "study.toml"
    assert len(train(duplicate).resumed) == 1
    same_numbers(finals(duplicate), reference)
    assert digest(original.parent) == before  # its checkpoints are still there, untouched
    assert len(train(original).resumed) == 1  # and it resumes from them, as if never copied
    same_numbers(finals(original), reference)


def test_moved_store_still_loads_its_weights(tmp_path, capsys, reference):
    original = write(tmp_path / "original")
    train(original)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(original.parent), str(moved))
    store = Store.for_study(moved / "study.toml", read_only=True)
    run_id = store.runs()[0]["id"]
    assert store.runs()[0]["status"] == "done"
    arrays, metadata = store.load_arrays(run_id, "weights")
    assert arrays["dense_1.weight"].shape == (64, 784) and metadata["run_id"] == run_id
    code, out, err = invoke(capsys, "show", run_id[:8], "--store", moved / "mnistlab.db")
    assert code == 0 and "status: done" in out
    assert train(moved / "study.toml").trained == []


def test_schema_1_absolute_paths_are_migrated_to_relative(tmp_path):
    store = Store(str(tmp_path / "db.sqlite"))
    store.register({"name": "s"}, [{"id": "abcd1234", "model": "m", "layers": []}])
    store.save_arrays("abcd1234", "weights", {"w": np.arange(4, dtype=np.float32)})
    with store.engine.begin() as conn:  # what mnistlab 0.1 wrote: absolute paths, schema 1
        conn.exec_driver_sql("UPDATE artifacts SET path = '/old/home/mnistlab-artifacts/abcd1234/weights.safetensors'")
        conn.exec_driver_sql("UPDATE mnistlab_info SET value = '1' WHERE key = 'schema_version'")
    store.engine.dispose()
    old = Store(str(tmp_path / "db.sqlite"), read_only=True)  # read as it is, not migrated
    assert old.load_arrays("abcd1234", "weights")[0]["w"].tolist() == [0, 1, 2, 3]
    migrated = Store(str(tmp_path / "db.sqlite"))
    with migrated.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT path FROM artifacts").scalar() == "abcd1234/weights.safetensors"
        assert conn.exec_driver_sql("SELECT value FROM mnistlab_info WHERE key = 'schema_version'").scalar() \
            == str(SCHEMA_VERSION) == "2"
    assert migrated.load_arrays("abcd1234", "weights")[0]["w"].tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage,which,then", [
    ("flipped", ["checkpoint-2"], "resuming from its epoch-1 checkpoint"),
    ("truncated", ["checkpoint-2"], "resuming from its epoch-1 checkpoint"),
    ("truncated", ["checkpoint-2", "checkpoint-1"], "training it again from the start"),
])
def test_damaged_checkpoint_falls_back_and_says_so(tmp_path, monkeypatch, reference, damage, which, then):
    path = write(tmp_path)
    interrupted(path, monkeypatch, epoch=2)
    run_id = Store.for_study(path).runs()[0]["id"]
    for name in which:
        DAMAGE[damage](tmp_path / "mnistlab-artifacts" / run_id / f"{name}.safetensors")
    notes = Notes()
    outcome = train(path, reporter=notes)
    assert (outcome.resumed if len(which) == 1 else outcome.trained) == [run_id]
    assert len(notes.lines) == 1 and then in notes.lines[0] and "damaged" in notes.lines[0]
    assert "\n" not in notes.lines[0]
    same_numbers(finals(path), reference)  # never a silent resume from wrong weights
    assert not [p for p in (tmp_path / "mnistlab-artifacts" / run_id).iterdir() if "checkpoint" in p.name]


def test_history_rows_missing_behind_a_checkpoint_are_restored(tmp_path, monkeypatch, reference):
    path = write(tmp_path)  # as a kill between the checkpoint and its row left the old store
    interrupted(path, monkeypatch, epoch=2)
    store = Store.for_study(path)
    run_id = store.runs()[0]["id"]
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM epochs WHERE epoch = 2")
    store.engine.dispose()
    notes = Notes()
    assert train(path, reporter=notes).resumed == [run_id]
    assert any("1 history row(s) restored" in line for line in notes.lines)
    same_numbers(finals(path), reference)


# ---------------------------------------------------------------- damaged final weights
@pytest.fixture(scope="module")
def two_done(tmp_path_factory, mnist):
    """A done study of two runs, to copy and damage."""
    path = write(tmp_path_factory.mktemp("two"), TWO)
    train(path)
    return path.parent


@pytest.mark.parametrize("damage", ["flipped", "truncated", "deleted"])
def test_damaged_weights_affect_only_their_run(tmp_path, capsys, two_done, damage):
    path = copy(two_done, tmp_path / "study") / "study.toml"
    store = Store.for_study(path, read_only=True)
    bad, good = (r["id"] for r in store.runs())
    DAMAGE[damage](path.parent / "mnistlab-artifacts" / bad / "weights.safetensors")
    with pytest.raises(DamagedArtifact, match=f"run {bad}: its weights file .* (damaged|missing)"):
        store.load_arrays(bad, "weights")
    assert store.load_arrays(good, "weights") is not None
    assert [r["status"] for r in store.runs()] == ["damaged", "done"]
    code, out, _ = invoke(capsys, "ls", path)
    assert code == 0 and "damaged" in out and "done" in out
    code, out, _ = invoke(capsys, "table", path, "--format", "markdown")
    assert code == 0 and "| 1 damaged |" in out
    report = write_report(store, "two", tmp_path / "r.html").read_text()
    assert f"run {bad} is damaged" in report and "--retry-failed" in report and 's-damaged' in report
    assert invoke(capsys, "export", bad, "--store", path.parent / "mnistlab.db", "-o", tmp_path / "x")[0] == 2
    assert train(path).trained == []  # skipped, as failed runs are, until asked
    assert train(path, retry_failed=True).trained == [bad]
    assert [r["status"] for r in store.runs()] == ["done", "done"]
    assert store.load_arrays(bad, "weights") is not None


def test_artifact_changed_on_disk_is_detected_when_read(tmp_path):
    store = Store(str(tmp_path / "db.sqlite"))
    store.register({"name": "s"}, [{"id": "abcd1234", "model": "m", "layers": []}])
    written = store.save_arrays("abcd1234", "weights", {"w": np.ones(1000, dtype=np.float32)})
    assert written == tmp_path / "db-artifacts" / "abcd1234" / "weights.safetensors"
    with store.engine.connect() as conn:  # recorded relative to the store, with its SHA-256
        row = conn.execute(sa.text("SELECT path, sha256 FROM artifacts")).one()
    assert row.path == "abcd1234/weights.safetensors" and len(row.sha256) == 64
    flip(written)
    with pytest.raises(DamagedArtifact, match="SHA-256"):
        store.load_arrays("abcd1234", "weights")


# ---------------------------------------------------------------- resumed in another way
@pytest.mark.parametrize("group", [True, False], ids=["grouped", "alone"])
def test_a_run_resumed_with_other_threads_records_how_each_stretch_trained(tmp_path, monkeypatch, capsys, mnist,
                                                                          group):
    """Some kernels sum in another order on another number of threads (a CNN differed by 2.5 points
    after one epoch, docs/RELIABILITY.md), and a run resumed under `run -j 3` after starting alone
    continued on one thread where it began on two: its record said only the last. Now every stretch."""
    from conftest import MLP, tiny_study
    from hostile import interrupt_at
    from mnistlab.api import EngineOptions
    path = write(tmp_path, tiny_study(name="tiny", models={"a": MLP}, epochs=3, train_size=600, test_size=200,
                                      extra="repeats = 2"))
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(path, engine=EngineOptions(threads=1), group=group)
    notes = Notes()
    outcome = train(path, engine=EngineOptions(threads=2), group=group, reporter=notes)
    assert len(outcome.resumed) == 1 and len(outcome.trained) == 1  # stopped as the first run's epoch 1 committed
    runs = Store.for_study(path).runs()
    resumed = [r for r in runs if r["id"] in outcome.resumed]
    for run in resumed:
        env = run["environment"]
        assert env["threads"] == 2 and [(s["from_epoch"], s["threads"]) for s in env["trained_with"]] == [(1, 1), (2, 2)]
        assert env["trained_with"][0]["torch"] == env["torch"] and env["trained_with"][0]["device"] == "cpu"
        assert any(run["id"] in line and "threads 1 -> 2" in line for line in notes.lines), notes.lines
    for run in runs:
        if run not in resumed:  # trained start to end one way: nothing more to say
            assert "trained_with" not in run["environment"]
    code, out, _ = invoke(capsys, "show", resumed[0]["id"], "--store", tmp_path / "mnistlab.db")
    assert code == 0 and "epoch 1: threads 1" in out and "epochs 2-3: threads 2" in out, out
    assert "engine: device cpu, precision fp32, threads 2" in out
    report = write_report(Store.for_study(path), "tiny", tmp_path / "r.html").read_text()
    assert "resumed in another way" in report and resumed[0]["id"] in report


def test_a_run_resumed_on_a_machine_with_other_cpu_kernels_records_both(tmp_path, monkeypatch, mnist):
    """The same study trained again on another VM of the same kind differed from the first in the third
    decimal where it has BatchNorm (seed 001's model 1: epoch-1 loss 0.1993 there, 0.1998 here; model 2,
    without, the same). This project's VMs come AVX2-only or with AVX-512 (docs/PERFORMANCE.md), torch's
    kernels sum in other orders on each, and no record said which a run had. A run resumed
    across such machines now records both stretches; a checkpoint of an older mnistlab, which did not
    record the kernels, resumes as one stretch and with no note (unknown there, not a change)."""
    import torch

    from hostile import interrupt_at
    from mnistlab.api import EngineOptions
    from mnistlab.runner import driver
    here = torch.backends.cpu.get_cpu_capability()
    assert EngineOptions(threads=1).record()["cpu_capability"] == here
    path = write(tmp_path)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        patch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
        with pytest.raises(KeyboardInterrupt):
            train(path, engine=EngineOptions(threads=1))
    notes = Notes()
    train(path, engine=EngineOptions(threads=1), reporter=notes)
    env = Store.for_study(path).runs()[0]["environment"]
    assert [(s["from_epoch"], s["cpu_capability"]) for s in env["trained_with"]] == [(1, "AVX2"), (2, here)]
    assert env["cpu_capability"] == here and any(f"cpu_capability AVX2 -> {here}" in line for line in notes.lines)
    older = tmp_path / "older"
    older.mkdir()
    path = write(older)
    plain = driver.stretch_record
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        patch.setattr(driver, "stretch_record", lambda engine: {k: v for k, v in plain(engine).items()
                                                                 if k != "cpu_capability"})
        with pytest.raises(KeyboardInterrupt):
            train(path, engine=EngineOptions(threads=1))
    notes = Notes()
    train(path, engine=EngineOptions(threads=1), reporter=notes)
    assert "trained_with" not in Store.for_study(path).runs()[0]["environment"] and notes.lines == []


def test_stretches_read_as_what_changed():
    from mnistlab.wording import stretch_lines
    one = {"torch": "2.13.0", "device": "cpu", "threads": 2}
    two = [{"from_epoch": 1, **one}, {"from_epoch": 8, **one, "threads": 1}, {"from_epoch": 12, **one, "device": "cuda"}]
    assert stretch_lines(two, 12) == ["epochs 1-7: device cpu, threads 2", "epochs 8-11: device cpu, threads 1",
                                  "epoch 12: device cuda, threads 2"]
    older = [{"from_epoch": 5, **one}]  # resumed from a checkpoint written before stretches were kept
    assert stretch_lines(older, 6) == ["epochs 1-4: not recorded (a checkpoint of an older mnistlab)",
                                   "epochs 5-6: as the engine line says"]
    assert stretch_lines([{"from_epoch": 2, **one}], 2) == ["epoch 1: not recorded (a checkpoint of an older mnistlab)",
                                                            "epoch 2: as the engine line says"]


def test_a_run_resumed_the_same_way_records_one_way(tmp_path, monkeypatch, mnist):
    from mnistlab.api import EngineOptions
    path = write(tmp_path)
    interrupted(path, monkeypatch, epoch=2)
    notes = Notes()
    train(path, reporter=notes)
    run = Store.for_study(path).runs()[0]
    assert "trained_with" not in run["environment"] and notes.lines == []
    assert EngineOptions().threads is None  # the default both times: torch's own count


def test_worker_processes_say_what_the_inline_runner_says(tmp_path, monkeypatch, reference):
    """Under `run --workers N` the workers trained with a silent reporter: a damaged checkpoint's
    fallback, said in one line inline, was said nowhere."""
    import subprocess
    import sys
    path = write(tmp_path)
    interrupted(path, monkeypatch, epoch=2)
    run_id = Store.for_study(path).runs()[0]["id"]
    flip(tmp_path / "mnistlab-artifacts" / run_id / "checkpoint-2.safetensors")
    done = subprocess.run([sys.executable, "-m", "mnistlab.cli", "run", str(path), "--workers", "2", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "damaged" in done.stderr and "resuming from its epoch-1 checkpoint" in done.stderr, done.stderr
    same_numbers(finals(path), reference)


# ---------------------------------------------------------------- claims: heartbeats and takeovers
def take_over(store: Store, run_id: str, owner: str = "elsewhere:1") -> None:
    """What `mnistlab run` on another host does to a run whose heartbeat it finds stale: claims it."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET owner = :owner WHERE id = :id"), {"owner": owner, "id": run_id})


def test_a_process_beats_for_its_runs_between_epochs(tmp_path, monkeypatch):
    """Heartbeats came only with committed epochs, so from another host a run whose epoch outlasted
    STALE_AFTER (a seed CNN on one thread: 15-30 min an epoch) looked dead, and was trained twice."""
    from mnistlab.store import claims
    monkeypatch.setattr(claims, "HEARTBEAT_EVERY", 0.05)
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    store.register({"name": "s"}, [{"id": "a", "model": "m", "repeat": 0, "point": "", "sweep": {}, "layers": [],
                                    "dataset": "mnist", "epochs": 2, "batch_size": 8, "optimizer": "adam()",
                                    "loss": "x", "validation": "test", "seed": 0, "study": "s"}])
    assert store.claim("a") == "pending"
    with store.engine.begin() as conn:  # as if its last beat were an hour ago
        conn.execute(sa.text("UPDATE runs SET heartbeat = '2000-01-01 00:00:00' WHERE id = 'a'"))
    deadline = time.monotonic() + 30
    while store.runs()[0]["heartbeat"].year == 2000 and time.monotonic() < deadline:
        time.sleep(0.02)
    (run,) = store.runs()  # beaten without an epoch: another host reads it as alive
    assert run["status"] == "running" and (claims.now() - run["heartbeat"]).total_seconds() < claims.STALE_AFTER
    store.finish("a", "done")  # holds no run now: the thread ends by itself
    while (store.url, os.getpid()) in claims._beating and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (store.url, os.getpid()) not in claims._beating


def test_a_run_taken_over_writes_nothing_more_from_the_process_that_lost_it(tmp_path, monkeypatch, mnist):
    """A process paused past STALE_AFTER (Ctrl-Z, a suspended laptop, SIGSTOP) and then continued went
    on writing epochs and finally its result over the run another host had claimed and was training."""
    path = write(tmp_path, TWO)
    real = Store.commit_epoch
    taken = []

    def commit_then_lose(self, run_id, row, *args):
        real(self, run_id, row, *args)
        if row["epoch"] == 1 and not taken:  # while this process trains epoch 2, another host claims the run
            take_over(self, run_id)
            taken.append(run_id)

    monkeypatch.setattr(Store, "commit_epoch", commit_then_lose)
    notes = Notes()
    outcome = train(path, reporter=notes)
    store = Store.for_study(path)
    runs = {r["id"]: r for r in store.runs(study="two")}
    (lost,) = taken
    assert outcome.skipped == [lost] and not outcome.failed and len(outcome.trained) == 1
    assert runs[lost]["status"] == "running" and runs[lost]["owner"] == "elsewhere:1"  # the other host's still
    assert [h["epoch"] for h in store.history(lost)] == [1] and runs[lost]["epochs_done"] == 1
    assert store.load_arrays(lost, "final") is None and store.load_arrays(lost, "checkpoint") is not None
    assert any(f"run {lost}: taken over by elsewhere:1" in line for line in notes.lines), notes.lines
    (other,) = set(runs) - {lost}
    assert runs[other]["status"] == "done"


def test_a_taken_run_refuses_its_epochs_and_result_but_an_unclaimed_one_takes_them(tmp_path):
    from mnistlab.store import TakenOver
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    spec = {"model": "m", "repeat": 0, "point": "", "sweep": {}, "layers": [], "dataset": "mnist", "epochs": 2,
            "batch_size": 8, "optimizer": "adam()", "loss": "x", "validation": "test", "seed": 0, "study": "s"}
    store.register({"name": "s"}, [dict(spec, id="a"), dict(spec, id="b")])
    row = {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "seconds": 1.0}
    assert store.claim("a") == "pending"
    take_over(store, "a")
    with pytest.raises(TakenOver, match=r"run a: taken over by elsewhere:1, since this process \(.*:\d+\) wrote no "
                                        r"heartbeat for over 10 min"):
        store.add_epoch("a", row)
    with pytest.raises(TakenOver):
        store.finish("a", "done", metrics={"test_accuracy": 0.9})
    weights = {"w": np.ones(3, dtype=np.float32)}
    with pytest.raises(TakenOver):  # its file would replace the new owner's (the same name)
        store.save_arrays("a", "weights", weights)
    with pytest.raises(TakenOver):
        store.save_json("a", "mistakes", [])
    assert not (store.artifacts_dir / "a").exists() and store.load_arrays("a", "weights") is None
    store.save_arrays("b", "weights", weights)
    (a, b) = store.runs()
    assert (a["status"], a["owner"], a["epochs_done"], a["test_accuracy"], store.history("a")) == (
        "running", "elsewhere:1", 0, None, [])
    store.add_epoch("b", row)  # nobody holds it (imports, tests): written as before
    store.finish("b", "done")
    assert store.runs()[1]["status"] == "done" and store.history("b")[0]["epoch"] == 1


def test_listings_tell_an_interrupted_run_from_one_in_training(tmp_path, monkeypatch, capsys, mnist):
    """`ls`, `show`, the table and the report said "running" for a run whose process was long gone
    (killed, or Ctrl-C): nothing told the user it waits for the next `mnistlab run`."""
    from mnistlab.report.table import comparison
    path = write(tmp_path, TWO)
    interrupted(path, monkeypatch, epoch=1)  # Ctrl-C after the first run's first epoch
    store = Store.for_study(path)
    (stopped,) = [r for r in store.runs(study="two") if r["status"] == "running"]
    code, out, _ = invoke(capsys, "ls", path)
    assert code == 0 and "interrupted" in out and "running" not in out and "1/2" in out
    code, out, _ = invoke(capsys, "ls", "--store", store.database)
    assert code == 0 and "1 interrupted" in out
    code, out, _ = invoke(capsys, "show", stopped["id"], "--store", store.database)
    assert code == 0 and "status: interrupted" in " ".join(out.split())
    assert {r.status for r in comparison(store, "two")} == {"1 interrupted", "1 pending"}
    assert 'class="badge s-interrupted"' in write_report(store, "two", tmp_path / "r.html").read_text()
    assert store.claim(stopped["id"]) == "running"  # a live process (this one) trains it: running again
    code, out, _ = invoke(capsys, "ls", path)
    assert "running" in out and "interrupted" not in out


# ---------------------------------------------------------------- a full disk
@pytest.mark.parametrize("fails", ["checkpoint-2", "weights"])
def test_a_full_disk_stops_the_study_in_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, reference, fails):
    """A checkpoint or weights file that could not be written (ENOSPC) marked the run failed, and the
    next run too, and so on through the study; `--retry-failed` then trained each from its start.
    The disk is the store's problem: the study stops with one line, the run keeps its last epoch."""
    import errno
    from mnistlab.store import files
    path = write(tmp_path)
    real = os.fsync

    def full_disk(fd):  # the file is written, but cannot be flushed to the disk: a part-written temporary
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(fails):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "fsync", full_disk)
        code, _, err = invoke(capsys, "run", path, "-q")
    (line,) = [x for x in err.splitlines() if "No space left on device" in x]
    assert code == 2 and "Traceback" not in err and f"{fails}.safetensors: cannot write" in line
    (run,) = Store.for_study(path).runs()
    assert run["status"] == "running" and run["error"] is None and run["epochs_done"] == (1 if fails.startswith("c") else 3)
    assert not list((tmp_path / "mnistlab-artifacts").rglob("*.tmp*"))  # no part-written file holds space
    code, out, _ = invoke(capsys, "ls", path)
    assert "interrupted" in out
    code, _, _ = invoke(capsys, "run", path, "-q")  # space freed: the plain command again
    assert code == 0
    same_numbers(finals(path), reference)
