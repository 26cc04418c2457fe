"""Studies end to end through the store: skip, resume after SIGKILL, retry, divergence, edits, two writers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import MLP, tiny_study
from mnistlab.api import load_study, run
from mnistlab.store import Store

CLI = [sys.executable, "-m", "mnistlab.cli"]


def mnistlab(*args, cwd=None, check=True):
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"mnistlab {args} exited {done.returncode}: {done.stderr}")
    return done


def store_of(path):
    return Store.for_study(path)


def test_cli_run_prints_table_and_second_run_skips_everything(write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}))
    first = mnistlab("run", path)
    assert "study tiny" in first.stdout and "a" in first.stdout and "b" in first.stdout
    assert "trained 2" in first.stderr
    runs = store_of(path).runs(study="tiny")
    assert [r["status"] for r in runs] == ["done", "done"] and all(r["test_accuracy"] > 0.5 for r in runs)
    started = {r["id"]: r["started"] for r in runs}
    second = mnistlab("run", path)
    assert "trained 0" in second.stderr and "skipped 2" in second.stderr
    assert {r["id"]: r["started"] for r in store_of(path).runs(study="tiny")} == started
    assert len(store_of(path).history(runs[0]["id"])) == 2


def test_study_edited_between_runs_retrains_only_changed_runs(write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}, epochs=1))
    outcome = run(load_study(path))
    assert len(outcome.trained) == 2
    path.write_text(path.read_text().replace("Dense(64", "Dense(48"))
    outcome = run(load_study(path))
    assert len(outcome.trained) == 1 and len(outcome.skipped) == 1
    assert [r["model"] for r in store_of(path).runs(study="tiny")] == ["a", "b"]


def test_diverging_run_recorded_while_study_goes_on(write_study, mnist):
    text = tiny_study(models={"wild": MLP, "calm": ["Dense(10, activation='softmax')"]}, epochs=2).replace(
        'name = "wild"', 'name = "wild"\noptimizer = "SGD(learning_rate=1e30)"')
    path = write_study(text)
    outcome = run(load_study(path))
    assert len(outcome.diverged) == 1 and len(outcome.trained) == 2
    runs = {r["model"]: r for r in store_of(path).runs(study="tiny")}
    assert runs["wild"]["status"] == "diverged" and "nan" in runs["wild"]["error"].lower()
    assert runs["calm"]["status"] == "done"
    table = mnistlab("table", path, "--format", "markdown").stdout
    assert "1 diverged" in table


def test_failed_run_retried_only_with_retry_failed(write_study, mnist, monkeypatch):
    import mnistlab.runner.driver as runner
    path = write_study(tiny_study(models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}, epochs=1))
    real_fit = runner.fit

    def flaky(spec, *args, **kwargs):  # each model trains alone: the plain engine
        if spec.model == "a":
            raise RuntimeError("disk on fire\nsecond line")
        return real_fit(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", flaky)
    outcome = run(load_study(path))
    assert len(outcome.failed) == 1
    failed = store_of(path).runs(study="tiny")[0]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: disk on fire"
    monkeypatch.setattr(runner, "fit", real_fit)
    assert run(load_study(path)).trained == []
    assert len(run(load_study(path), retry_failed=True).trained) == 1
    assert {r["status"] for r in store_of(path).runs(study="tiny")} == {"done"}


def test_sigkill_mid_epoch_then_rerun_loses_and_repeats_nothing(write_study, mnist, tmp_path):
    models = {"first": MLP, "second": ["Dense(128, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')"],
              "third": ["Dense(10, activation='softmax')"]}
    text = tiny_study(models=models, epochs=4, train_size=20_000, test_size=1000)
    path = write_study(text)
    proc = subprocess.Popen([*CLI, "run", str(path), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = store_of(path)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until "second" has finished an epoch and is inside the next
        runs = store.runs(study="tiny") if (path.parent / "mnistlab.db").exists() else []
        if len(runs) == 3 and runs[1]["epochs_done"] >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.15)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["model"]: r for r in store.runs(study="tiny")}
    assert before["first"]["status"] == "done" and before["second"]["status"] == "running"
    kept_epochs = store.history(before["second"]["id"])
    assert 2 <= len(kept_epochs) < 4

    outcome = run(load_study(path))
    after = {r["model"]: r for r in store.runs(study="tiny")}
    assert outcome.skipped == [before["first"]["id"]]  # nothing finished was retrained
    assert outcome.resumed == [before["second"]["id"]]
    assert after["first"]["finished"] == before["first"]["finished"]
    history = store.history(after["second"]["id"])
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[:len(kept_epochs)] == kept_epochs  # nothing lost

    (tmp_path / "ref").mkdir()
    reference = write_study(text.replace('name = "tiny"', 'name = "ref"'), name="ref/study.toml")
    run(load_study(reference))
    ref = {r["model"]: r for r in store_of(reference).runs(study="ref")}
    for model in models:  # the interrupted study ends exactly where an uninterrupted one does
        assert after[model]["test_loss"] == pytest.approx(ref[model]["test_loss"], rel=1e-6, abs=1e-7)
        assert after[model]["test_accuracy"] == ref[model]["test_accuracy"]


def test_two_processes_on_one_database_lose_and_repeat_nothing(write_study, mnist):
    models = {f"m{i}": [f"Dense({16 + i}, activation='relu')", "Dense(10, activation='softmax')"] for i in range(6)}
    path = write_study(tiny_study(models=models, epochs=2, train_size=3000))
    code = ("import json, sys; from mnistlab.api import load_study, run; "
            "o = run(load_study(sys.argv[1])); print(json.dumps(o.trained + o.resumed))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    trained = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(trained[0] + trained[1]) == sorted(r["id"] for r in store_of(path).runs(study="tiny"))
    assert trained[0] and trained[1], "both processes should have found work"
    store = store_of(path)
    for r in store.runs(study="tiny"):
        assert r["status"] == "done" and [h["epoch"] for h in store.history(r["id"])] == [1, 2]


def test_cli_errors_are_one_line_without_traceback(write_study, tmp_path):
    bad = write_study(tiny_study(models={"a": ["Dence(64)", "Dense(10, activation='softmax')"]}))
    done = mnistlab("run", bad, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "layer 1 'Dence(64)': unknown layer 'Dence'; did you mean 'Dense'?" in done.stderr
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 64)
    done = mnistlab("ls", "--store", junk, check=False)
    assert done.returncode == 2 and "not a readable database" in done.stderr and "Traceback" not in done.stderr


def test_ls_show_table_and_abbreviated_ids(write_study, mnist):
    path = write_study(tiny_study(epochs=1))
    mnistlab("run", path, "-q")
    store = store_of(path)
    run_id = store.runs(study="tiny")[0]["id"]
    db = path.parent / "mnistlab.db"
    listing = mnistlab("ls", "--store", db).stdout
    assert "tiny" in listing and "1 done" in listing
    assert run_id[:8] in mnistlab("ls", path).stdout
    shown = mnistlab("show", run_id[:6], "--store", db).stdout
    assert f"run {run_id}" in shown and "val_accuracy" in shown and "Dense(64, activation='relu')" in shown
    as_json = json.loads(mnistlab("table", path, "--format", "json").stdout)
    assert as_json[0]["test_accuracy"]["n"] == 1 and as_json[0]["runs"] == [run_id]


def test_every_command_has_help():
    for command in ["run", "summary", "ls", "show", "table", "report", "predict", "export", "data fetch", "data info"]:
        done = mnistlab(*command.split(), "--help")
        assert "Usage" in done.stdout and len(done.stdout.splitlines()) > 3


def test_sweep_trains_as_one_group_and_no_group_trains_one_by_one(write_study, mnist, tmp_path):
    text = tiny_study(epochs=1, extra="repeats = 2").replace(
        "[[model]]", '[sweep]\n"optimizer.learning_rate" = [0.001, 0.01]\n\n[[model]]')
    path = write_study(text)
    grouped = mnistlab("run", path)
    assert "+3 grouped" in grouped.stderr and "trained 4" in grouped.stderr
    alone = mnistlab("run", path, "--no-group", "--store", tmp_path / "alone.db")
    assert "grouped" not in alone.stderr and alone.stderr.count("\nrun ") + alone.stderr.startswith("run ") >= 3
    a = {r["id"]: r["test_accuracy"] for r in store_of(path).runs(study="tiny")}
    b = {r["id"]: r["test_accuracy"] for r in Store(str(tmp_path / "alone.db")).runs(study="tiny")}
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 0.01 for k in a)  # no dropout: same up to rounding


def test_process_pool_shares_the_work_and_trains_each_run_once(write_study, mnist):
    models = {f"m{i}": [f"Dense({20 + i}, activation='relu')", "Dense(10, activation='softmax')"] for i in range(4)}
    path = write_study(tiny_study(models=models, epochs=1))
    done = mnistlab("run", path, "--workers", "2")
    assert "trained 4" in done.stderr and "failed 0" in done.stderr
    runs = store_of(path).runs(study="tiny")
    assert all(r["status"] == "done" and r["epochs_done"] == 1 for r in runs)
    assert {r["environment"]["threads"] for r in runs} == {max(1, os.cpu_count() // 2)}  # cores / workers
    from mnistlab.engine import onednn
    assert {r["environment"]["dense_gemm"] for r in runs} == {"onednn" if onednn.available() else "torch"}


def test_process_pool_starts_the_longest_run_first(write_study, mnist):
    """The study lists its longest model last; in study order it would start only when a worker
    came free, and train alone at the end. Whichever worker claims first takes it."""
    models = {"a": ["Dense(20, activation='relu')", "Dense(10, activation='softmax')"],
              "b": ["Dense(24, activation='relu')", "Dense(10, activation='softmax')"],
              "long": ["Dense(256, activation='relu')", "Dense(128, activation='relu')", "Dense(10, activation='softmax')"]}
    path = write_study(tiny_study(models=models, epochs=1))
    mnistlab("run", path, "--workers", "2", "-q")
    runs = sorted(store_of(path).runs(study="tiny"), key=lambda r: r["started"])
    assert [r["status"] for r in runs] == ["done"] * 3
    assert runs[0]["model"] == "long", [(r["model"], r["started"]) for r in runs]


def test_predict_and_export_a_trained_run(write_study, mnist, tmp_path):
    import numpy as np
    from safetensors.numpy import load_file

    from mnistlab.images import write_png
    path = write_study(tiny_study(epochs=2, train_size=5000))
    mnistlab("run", path, "-q")
    run_id = store_of(path).runs(study="tiny")[0]["id"]
    db = path.parent / "mnistlab.db"
    (x_test, y_test) = mnist[1]
    write_png(tmp_path / "seven.png", x_test[0])              # MNIST polarity: white on black
    write_png(tmp_path / "two.png", 255 - x_test[1])          # a dark digit on white paper is inverted
    np.save(tmp_path / "one.npy", x_test[2])
    done = mnistlab("predict", run_id[:8], tmp_path / "seven.png", tmp_path / "two.png", tmp_path / "one.npy",
                    "--store", db)
    assert [line.split(": ")[1].split()[0] for line in done.stdout.splitlines()] == [str(y) for y in y_test[:3]]
    from mnistlab.api import predict
    rows = predict(Store(str(db)), run_id, [tmp_path / "seven.png"])
    assert abs(sum(rows[0]["probabilities"]) - 1) < 1e-4 and rows[0]["confidence"] > 0.5
    bad = mnistlab("predict", run_id, tmp_path / "nope.png", "--store", db, check=False)
    assert bad.returncode == 2 and "nope.png: no such image file" in bad.stderr

    files = mnistlab("export", run_id, "-o", tmp_path / "out", "--store", db).stdout.split()
    weights = load_file(str(tmp_path / "out" / "weights.safetensors"))
    assert weights["dense_1.weight"].shape == (64, 784) and len(files) == 3
    assert json.loads((tmp_path / "out" / "spec.json").read_text())["id"] == run_id
    assert (tmp_path / "out" / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
