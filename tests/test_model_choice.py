"""`run --model` and `plan --model`: train (or cost) only some models of a study, by name or glob; the
others stay pending for a later `run`, and a name that matches no model is a one-line error."""

import pytest

from conftest import MLP, tiny_study
from mnistlab.api import load_study, plan, run
from mnistlab.errors import OptionsError
from mnistlab.runner.options import RunOptions
from mnistlab.runner.planning import chosen
from mnistlab.spec import expand
from test_runner import mnistlab, store_of

SOFTMAX = ["Dense(10, activation='softmax')"]
NARROW = ["Dense(16, activation='relu')", "Dense(10, activation='softmax')"]
MODELS = {"model 1: wide": MLP, "model 2: softmax": SOFTMAX, "model 10: narrow": NARROW}


def test_a_model_is_chosen_by_its_exact_name_or_a_glob(write_study):
    specs = expand(load_study(write_study(tiny_study(models=MODELS, extra="repeats = 2"))))
    assert len(specs) == 6

    def models(*names):
        picked = chosen(specs, names)
        assert picked == [s for s in specs if s in picked]  # study order, each run once
        return {m: [s.model for s in picked].count(m) for m in {s.model for s in picked}}

    assert chosen(specs, ()) == specs
    assert models("model 1: wide") == {"model 1: wide": 2}  # an exact name is not a prefix: model 10 stays out
    assert models("model 1*") == {"model 1: wide": 2, "model 10: narrow": 2}
    assert models("*softmax", "model 2*") == {"model 2: softmax": 2}  # named twice, trained once
    assert models("model ?: *") == {"model 1: wide": 2, "model 2: softmax": 2}
    with pytest.raises(OptionsError) as wrong:
        chosen(specs, ("model 1: wide", "model 3*"))
    assert str(wrong.value) == ("--model 'model 3*' matches no model of study 'tiny'; its models: 'model 1: wide', "
                                "'model 2: softmax', 'model 10: narrow' (a name, or a glob such as 'model 1*')")
    with pytest.raises(OptionsError, match="matches no model"):
        chosen(specs, ("MODEL 1*",))  # as the study spells it


def test_run_options_take_one_name_or_a_list_and_refuse_anything_else():
    assert RunOptions(models="a").models == ("a",)
    assert RunOptions(models=["a", "b*"]).models == ("a", "b*")
    for bad in ([3], [""], ["a", None]):
        with pytest.raises(OptionsError, match="models must be model names or globs"):
            RunOptions(models=bad)


def test_run_trains_only_the_chosen_model_and_a_later_run_the_rest(write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP, "b": SOFTMAX}, epochs=1, extra="repeats = 2"))
    study = load_study(path)
    assert (plan(study, models="b", calibrate=False).total, plan(study, calibrate=False).total) == (2, 4)
    first = run(study, models=["b"])
    assert len(first.trained) == 2 and not first.skipped
    runs = store_of(path).runs(study="tiny")
    assert {(r["model"], r["status"]) for r in runs} == {("a", "pending"), ("b", "done")}
    started = {r["id"]: r["started"] for r in runs if r["model"] == "b"}
    second = run(study)
    assert len(second.trained) == 2 and sorted(second.skipped) == sorted(started)  # b is not trained again
    runs = store_of(path).runs(study="tiny")
    assert all(r["status"] == "done" and r["test_accuracy"] > 0.5 for r in runs)
    assert {r["id"]: r["started"] for r in runs if r["model"] == "b"} == started


def test_cli_model_in_worker_processes_and_a_wrong_name_is_one_line(write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP, "b": SOFTMAX, "c [bold]x": NARROW}, epochs=1))
    wrong = mnistlab("run", path, "--model", "[red]d", check=False)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    assert "--model '[red]d' matches no model of study 'tiny'; its models: 'a', 'b', 'c [bold]x'" in wrong.stderr
    assert {r["status"] for r in store_of(path).runs(study="tiny")} <= {"pending"}  # nothing trained
    shown = mnistlab("plan", path, "--model", "c*")
    assert "plan: 1 run, 0 done, 1 to train" in shown.stdout
    done = mnistlab("run", path, "--model", "c [bold]x", "--model", "a", "-j", "2")
    assert done.stderr.startswith("plan: 2 runs, 0 done, 2 to train") and "trained 2" in done.stderr
    assert {r["model"]: r["status"] for r in store_of(path).runs(study="tiny")} == {
        "a": "done", "b": "pending", "c [bold]x": "done"}
