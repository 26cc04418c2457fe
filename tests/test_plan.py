"""`mnistlab plan` and the estimate `mnistlab run` prints: counts and groups as the runner plans them,
multiply-adds against torch's own FLOP counter, seconds from the store where it has them, peak memory
against a measured process, and the --yes limit."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import MLP, tiny_study
from mnistlab.api import load_study, plan, run
from mnistlab.engine import cost, onednn
from mnistlab.engine.layers import build_model, input_shape
from mnistlab.runner.planning import plan as group_plan
from mnistlab.runner.estimate import Plan, GroupCost
from mnistlab.spec import expand, parse_study
from mnistlab.store import Store

CLI = [sys.executable, "-m", "mnistlab.cli"]
CNN = ["Conv2D(8, (3, 3), activation='relu')", "MaxPooling2D((2, 2))", "Conv2D(16, (3, 3), padding='same')",
       "Flatten()", "Dense(32, activation='relu')", "Dense(10, activation='softmax')"]


def specs_of(models: dict, **kwargs):
    return expand(parse_study(tiny_study(models=models, **kwargs)))


@pytest.mark.parametrize("layers", [MLP, CNN], ids=["mlp", "cnn"])
def test_multiply_adds_are_torchs_flop_count_halved(layers, monkeypatch):
    monkeypatch.setattr(onednn, "_OP", None)  # torch's own matmul, which the FLOP counter sees
    spec = specs_of({"m": layers})[0]
    calls = spec.layer_calls()
    model = build_model(calls, input_shape(calls)).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *model.torch_input_shape))
    assert cost.macs_per_image(spec) == counter.get_total_flops() // 2
    train, test = cost.sizes(spec)
    assert (train, test) == (2000, 500)
    evaluated = spec.epochs * test + train + test
    assert cost.macs_per_run(spec) == cost.macs_per_image(spec) * (3 * train * spec.epochs + evaluated)


def test_optimizer_state_is_counted_by_stepping_it():
    slots = {o: cost.optimizer_slots(specs_of({"m": MLP}, optimizer=o)[0])
             for o in ("adam", "sgd", "SGD(momentum=0.9)", "rmsprop", "adadelta")}
    assert slots == {"adam": 2, "sgd": 0, "SGD(momentum=0.9)": 1, "rmsprop": 1, "adadelta": 2}


def test_plan_counts_and_groups_as_the_runner(write_study, mnist):
    text = tiny_study(models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}, epochs=1,
                      extra="repeats = 3")
    path = write_study(text)
    study = load_study(path)
    fresh = plan(study, calibrate=False)
    assert (fresh.total, fresh.done, fresh.to_train, len(fresh.groups)) == (6, 0, 6, 2)
    assert [g.runs for g in fresh.groups] == [len(g) for g in group_plan(expand(study))]
    assert fresh.groups[0].labels == ["a"] and fresh.groups[0].source == "—"
    run(study)
    again = plan(study)
    assert (again.done, again.to_train, again.groups) == (6, 0, []) and again.line() == "plan: 6 runs, 6 done, 0 to train"
    # more epochs: new runs of the same shape; their time comes from the stored seconds per epoch
    longer = load_study(write_study(text.replace("epochs = 1", "epochs = 4"), name="longer.toml"))
    estimate = plan(longer, Store.for_study(path))
    store = Store.for_study(path)
    stored = [statistics.median(e["seconds"] for e in store.history(r["id"]))
              for r in store.runs(study="tiny") if r["model"] == "a"]
    assert estimate.groups[0].source == "store: 3 runs"
    assert estimate.groups[0].seconds_per_run == pytest.approx(sorted(stored)[1] * 4)


def test_a_paused_epoch_does_not_stretch_the_estimate(write_study, mnist):
    """A run suspended (Ctrl-Z, SIGSTOP during a CI check) or starved for one epoch stored that
    epoch's wall time; the estimate reads each run's median epoch, not its mean."""
    text = tiny_study(models={"a": MLP}, epochs=5)
    path = write_study(text)
    study = load_study(path)
    run(study)
    store = Store.for_study(path)
    (done,) = store.runs(study="tiny")
    with sqlite3.connect(store.database) as conn:  # the record as a run paused for 100 s in epoch 3 leaves it
        conn.execute("UPDATE epochs SET seconds = 1.0 WHERE run_id = ?", (done["id"],))
        conn.execute("UPDATE epochs SET seconds = 101.0 WHERE run_id = ? AND epoch = 3", (done["id"],))
        conn.execute("UPDATE runs SET seconds = 105.0 WHERE id = ?", (done["id"],))
    longer = load_study(write_study(text.replace("epochs = 5", "epochs = 10"), name="longer.toml"))
    assert plan(longer, store).groups[0].seconds_per_run == pytest.approx(10.0)  # not 210


def test_an_interrupted_run_is_estimated_by_the_epochs_it_has_left(write_study, mnist):
    """`plan` (and `run`'s first line) counted a run resumed at epoch 3 of 4 as four epochs to train."""
    path = write_study(tiny_study(models={"a": MLP}, epochs=4, extra="repeats = 2"))
    study = load_study(path)
    run(study)
    store = Store.for_study(path)
    first, second = store.runs(study="tiny")
    with sqlite3.connect(store.database) as conn:  # as a process killed after epoch 3 leaves its run
        conn.execute("UPDATE runs SET status = 'running', epochs_done = 3, owner = NULL WHERE id = ?", (second["id"],))
    per_epoch = statistics.median(e["seconds"] for e in store.history(first["id"]))
    (group,) = plan(study, store).groups
    assert (group.runs, group.resumes_after, group.source) == (1, 3, "store: 1 run")
    assert group.seconds_per_run == pytest.approx(per_epoch)  # one epoch left, not four
    shown = subprocess.run([*CLI, "plan", str(path)], capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert shown.returncode == 0 and "a (resumes after epoch 3)" in shown.stdout


def test_the_plan_says_when_it_timed_on_a_busy_machine(monkeypatch):
    study = parse_study(tiny_study(models={"a": MLP}))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.2, 3.0, 2.5))
    busy = plan(study, Store("sqlite:///:memory:"))
    assert busy.groups[0].source == "calibrated" and busy.busy == (3.2, 2)
    assert "timed while the machine was busy, load 3.2 on 2 cores" in busy.line()
    monkeypatch.setattr(os, "getloadavg", lambda: (1.4, 1.0, 1.0))  # this process's own steps add about 1
    assert plan(study, Store("sqlite:///:memory:")).busy is None
    assert plan(study, Store("sqlite:///:memory:"), calibrate=False).busy is None and "busy" not in plan(
        study, Store("sqlite:///:memory:"), calibrate=False).line()


def test_calibration_times_the_engine_that_would_train():
    specs = specs_of({"m": MLP}, extra="repeats = 3")
    step = cost.calibrate(specs)
    assert step > 0
    assert cost.seconds_per_run(specs, step) == pytest.approx(
        (2 * 32 * step + (2 * 500 + 2500) * step / 64 / 3) / 3)  # 2 epochs of 2,000 / 64 steps, a member's share


def test_limits_ask_for_yes():
    cheap = GroupCost(["a"], 3, 1, 1, 10.0, "store (1 runs)", 2**30)
    assert Plan("s", 3, 0, 0, [cheap]).over_limit() is None
    assert "more than 24 h" in Plan("s", 3, 0, 0, [GroupCost(["a"], 3, 1, 1, 40_000.0, "x", 1)]).over_limit()
    assert "10,001 runs to train" in Plan("s", 10_001, 0, 0, [GroupCost(["a"], 10_001, 1, 1, 0.0, "x", 1)]).over_limit()


def test_with_workers_the_plan_deals_groups_longest_first_and_adds_their_memory(monkeypatch):
    """`run -j 2` printed the time of the groups one after another (and one group's memory): for
    three CNNs on two workers, twice the wall time it would take."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    groups = [GroupCost([name], 1, 1, 1, seconds, "x", mib * 2**20)
              for name, seconds, mib in (("a", 3.0, 100), ("b", 10.0, 300), ("c", 5.0, 200), ("d", 8.0, 50))]
    alone, pool = Plan("s", 4, 0, 0, groups), Plan("s", 4, 0, 0, groups, workers=2)
    assert alone.seconds == 26.0 and alone.peak_bytes == 300 * 2**20
    assert pool.seconds == 13.0  # 10 + 3 and 8 + 5: the longest first, each to the worker free first
    assert pool.peak_bytes == 500 * 2**20  # the two largest at once
    assert Plan("s", 4, 0, 0, groups, workers=8).seconds == 10.0  # more workers than groups: the longest
    assert "in 2 workers of 2 threads" in pool.line() and "workers" not in alone.line()


def test_with_workers_the_plan_times_at_a_workers_threads(write_study, mnist, monkeypatch):
    """A worker of `run -j N` trains on cores / N threads: the plan calibrates at that many, and
    reads only stored runs that trained with that many."""
    from mnistlab.runner import estimate as estimate_module
    path = write_study(tiny_study(models={"a": MLP}, epochs=1))
    study = load_study(path)
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(estimate_module.cost, "calibrate", lambda specs: seen.append(torch.get_num_threads()) or 0.01)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert plan(study, workers=2).groups[0].source == "calibrated" and seen == [2]
    assert torch.get_num_threads() == before  # restored
    run(study)  # trained with this process's threads
    threads = Store.for_study(path).runs(study="tiny")[0]["environment"]["threads"]
    monkeypatch.setattr(os, "cpu_count", lambda: threads * 2)  # a worker of -j 2 gets the threads it trained with
    assert plan(study, workers=2).groups == []  # all done: nothing to time
    longer = load_study(write_study(tiny_study(models={"a": MLP}, epochs=2), name="longer.toml"))
    assert plan(longer, Store.for_study(path), workers=2).groups[0].source == "store: 1 run"
    monkeypatch.setattr(os, "cpu_count", lambda: threads * 2 + 2)  # another thread count: calibrated instead
    assert plan(longer, Store.for_study(path), workers=2).groups[0].source == "calibrated"


def test_cli_plan_and_run_print_the_estimate_and_refuse_a_huge_study(write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP}, epochs=1))
    shown = subprocess.run([*CLI, "plan", path], capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0 and "plan: 1 run, 0 done, 1 to train in 1 group; about " in shown.stdout
    assert "50,816" in shown.stdout  # 784 x 64 + 64 x 10 multiply-adds an image
    trained = subprocess.run([*CLI, "run", path], capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0 and trained.stderr.startswith("plan: 1 run, 0 done, 1 to train")
    huge = write_study(tiny_study(models={"a": MLP}, extra="repeats = 1000") + textwrap.dedent("""
        [sweep]
        "optimizer.learning_rate" = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.011]
        """), name="huge.toml")
    refused = subprocess.run([*CLI, "run", huge, "-q"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "11,000 runs" in refused.stderr and "more than 10,000" in refused.stderr and "--yes" in refused.stderr
    assert Store.for_study(huge).study("tiny") is not None  # the small study's store, nothing new trained
    assert {r["status"] for r in Store.for_study(huge).runs(current=False)} == {"done"}


@pytest.mark.slow
def test_peak_memory_estimate_against_a_measured_process(write_study, mnist):
    path = write_study(tiny_study(models={"wide": ["Dense(1500, activation='relu')", "Dense(1500, activation='relu')",
                                                   "Dense(10, activation='softmax')"]},
                                  epochs=1, train_size=1000, test_size=1000, extra="repeats = 3"))
    estimate = plan(load_study(path), calibrate=False).peak_bytes
    # VmHWM, this process's own peak: ru_maxrss keeps the forking parent's across exec (Linux), so
    # a child of a pytest process grown to 1.5 GB "measured" 1.5 GB whatever it did itself
    code = ("import re, sys; from mnistlab.api import run; run(sys.argv[1]); "
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024)")
    measured = json.loads(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                         timeout=600, check=True).stdout)
    assert 0.8 * measured < estimate < 1.3 * measured  # 722 MiB against 664 MiB when written


def test_cli_plan_folds_long_group_labels_instead_of_cutting_them(write_study, mnist):
    """At 80 columns (off a terminal) `plan` printed `task 3a:…` and `calibrat…`."""
    long = "mnist mlp 64 relu, glorot uniform init, the variant with a long descriptive name"
    models = {f"{long} {i}": [MLP[0], f"Dropout(0.{i + 1})", MLP[1]] for i in range(3)}
    path = write_study(tiny_study(models=models, epochs=1, train_size=600))
    shown = subprocess.run([*CLI, "plan", path], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, COLUMNS="80"))
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("plan: ")[0]
    assert "…" not in table and max(map(len, table.splitlines())) <= 80, table
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if "group" in line and "runs" in line)
    cut = lines[header].index("runs")  # the group column's pieces, joined
    joined = "".join(line[:cut].strip("│┃ ").replace(" ", "") for line in lines[header + 1:])
    assert all(f"{long} {i}".replace(" ", "") in joined for i in range(3)), table
