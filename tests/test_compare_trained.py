"""Comparisons of real training on MNIST slices, through the CLI: a large difference (10 against 300
hidden units, 3 seeds, 2 epochs) is called one, two configurations identical in distribution are not,
the analysis of variance finds the factor that matters and not the one that does not, and both
engines store the test-set predictions the comparisons read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mnistlab.api import run
from mnistlab.data import load_tensors
from mnistlab.engine.fit import fit
from mnistlab.report.compare import compare
from mnistlab.spec import expand, parse_study
from mnistlab.store import Store

CLI = [sys.executable, "-m", "mnistlab.cli"]
STUDY = textwrap.dedent("""
    name = "width"
    seed = 3
    repeats = 3
    [train]
    epochs = 2
    batch_size = 64
    optimizer = "adam"
    train_size = 2000
    test_size = 1000

    [[model]]
    name = "mlp 300"
    layers = ["Dense(300, activation='relu')", "Dense(10, activation='softmax')"]

    # the same distribution: zero biases drawn from U(0, 0) shift the generator, so the output
    # layer starts from other random weights of the same distribution
    [[model]]
    name = "mlp 300 [twin]"
    layers = ["Dense(300, activation='relu', bias_initializer=RandomUniform(minval=0.0, maxval=0.0))",
              "Dense(10, activation='softmax')"]

    [[model]]
    name = "mlp 10"
    layers = ["Dense(10, activation='relu')", "Dense(10, activation='softmax')"]

    [[model]]
    name = "grid"
    epochs = 1
    repeats = 2
    layers = ["Dense({units}, activation='relu')", "Dense(10, activation='softmax')"]
    sweep = { units = [10, 300], "optimizer.epsilon" = [1e-7, 2e-7] }
    """)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("width") / "width.toml"
    path.write_text(STUDY)
    outcome = run(path)
    assert len(outcome.trained) == 17 and not outcome.failed and not outcome.diverged
    return path


def mnistlab(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_every_run_stores_its_test_predictions(trained):
    store = Store.for_study(trained)
    for r in store.runs(study="width"):
        arrays, _ = store.load_arrays(r["id"], "predictions")
        assert arrays["test"].dtype == np.uint8 and arrays["test"].shape == (1000,)
        assert np.mean(arrays["test"] == arrays["test_labels"]) == pytest.approx(r["test_accuracy"])


def test_plain_engine_predictions_too(mnist):
    spec = expand(parse_study(STUDY))[6]  # mlp 10, repeat 0: trained alone here
    result = fit(spec, load_tensors("mnist", train_size=2000, test_size=1000))
    assert set(result.predictions) == {"test", "test_labels"}
    assert np.mean(result.predictions["test"] == result.predictions["test_labels"]) == pytest.approx(result.test_accuracy)


def test_a_large_difference_is_real_and_identical_twins_are_not(trained):
    done = mnistlab("compare", trained, "--baseline", "mlp 300")
    assert done.returncode == 0, done.stderr
    blocks = {b.split("  ")[0]: b for b in done.stdout.split("\n\n")}
    assert "worse on the test set in each of the 3 seed pairs" in blocks["mlp 10"]
    assert "mlp 300 [twin]" in blocks  # a label with brackets printed as text, not markup
    assert "no difference detected at n=3" in blocks["mlp 300 [twin]"]
    data = json.loads(mnistlab("compare", trained, "-b", "mlp 10", "-f", "json").stdout)
    verdicts = {c["label"]: c["verdict"] for c in data["comparisons"]}
    assert verdicts["mlp 300"] == "better" and verdicts["mlp 300 [twin]"] == "better"
    assert all(p["only_baseline"] < p["only_config"] for p in data["comparisons"][0]["pairs"])


def test_anova_finds_the_units_and_not_adams_epsilon(trained):
    (grid,) = compare(Store.for_study(trained), "width").factors
    terms = {t.name: t for t in grid.terms}
    assert grid.n == 8 and terms["units"].p < 1e-3 and terms["units"].eta_sq > 0.8
    assert terms["optimizer.epsilon"].p > 0.05 and terms["optimizer.epsilon"].eta_sq < 0.05
    markdown = mnistlab("compare", trained, "--format", "markdown").stdout
    assert "Factor effects of 'grid' (8 runs):" in markdown and "| units | 1 |" in markdown


def test_train_metrics_mean_what_the_table_shows(trained):
    """`compare --metric train_loss` read the store's column (the evaluation pass after training)
    while the table's "train loss" is the last epoch's, as Keras' history: the same name, two numbers."""
    from mnistlab.report.table import comparison
    store = Store.for_study(trained)
    rows = {r.label: r for r in comparison(store, "width")}
    for metric in ("train_loss", "train_accuracy", "train_loss_eval", "train_accuracy_eval"):
        result = compare(store, "width", baseline="mlp 300", metric=metric)
        assert result.baseline_mean == pytest.approx(rows["mlp 300"].stats[metric].mean), metric
        (other,) = [c for c in result.comparisons if c.label == "mlp 10"]
        runs = {r["spec"]["seed"]: r for r in store.runs(study="width") if r["id"] in rows["mlp 10"].run_ids}
        history = {seed: store.history(r["id"])[-1] for seed, r in runs.items()}
        expected = ({s: h[metric.replace("train_", "")] for s, h in history.items()} if "eval" not in metric
                    else {s: r[metric.replace("_eval", "")] for s, r in runs.items()})
        assert other.mean == pytest.approx(np.mean(list(expected.values()))), metric
    assert rows["mlp 300"].stats["train_loss"].mean != pytest.approx(rows["mlp 300"].stats["train_loss_eval"].mean)


def test_bad_input_is_one_line(trained):
    for args, message in ((("--baseline", "grid"), "has 4 configurations; name one"),
                          (("--metric", "acc"), "--metric 'acc' is unknown"), (("--format", "csv"), "use text, markdown or json")):
        done = mnistlab("compare", trained, *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_old_runs_without_predictions_are_named(trained, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(trained.parent, copy)
    store = Store(f"sqlite:///{copy / 'mnistlab.db'}", copy / "mnistlab-artifacts")
    old = [r["id"] for r in store.runs(study="width") if r["model"] == "mlp 10"]
    for run_id in old:
        store.drop_artifact(run_id, "predictions")
    result = compare(store, "width", baseline="mlp 300")
    worse = next(c for c in result.comparisons if c.label == "mlp 10")
    assert worse.test == "exact sign-flip permutation" and worse.p == pytest.approx(0.25)
    assert worse.text.startswith("no difference detected at n=3; about ") and "would detect a difference of 0.2" in worse.text
    assert "no stored test-set predictions for 3 run(s)" in result.notes[0] and old[0][:8] in result.notes[0]
