"""`mnistlab table` fits the terminal: long model names and grid labels wrap, never cut to `mnist_…`;
`--format markdown` stays exact whatever the width."""

import os
import subprocess
import sys

import pytest

from mnistlab.report.table import comparison, render, text_cells
from mnistlab.store import Store

LONG = "mnist_mlp_364_212_batchnorm_dropout_relu_glorot_uniform_init"
POINT = "learning_rate=0.0123456, units=1000"


def spec(run_id, model, repeat, point):
    return {"id": run_id, "model": model, "repeat": repeat, "point": point, "sweep": {"units": 1000},
            "layers": ["Dense(10)"], "dataset": "mnist", "epochs": 2, "batch_size": 128, "optimizer": "adam()",
            "loss": "x", "validation": "test", "train_size": None, "test_size": None, "seed": repeat, "study": "s"}


@pytest.fixture
def store_path(tmp_path):
    """A store with a long-named model over 3 repeats (mean ± std cells), a short one and a markup-like one."""
    path = tmp_path / "db.sqlite"
    store = Store(str(path))
    specs = [spec(f"long{i}", LONG, i, POINT) for i in range(3)] + [spec("short0", "mlp", 0, ""),
                                                                     spec("mark0", "[red]lit[/red]", 0, "")]
    store.register({"name": "wide study"}, specs)
    for i, s in enumerate(specs):
        store.claim(s["id"])
        store.finish(s["id"], "done", params=(1_290_010, 1_290_010, 0), seconds=12.5 + i,
                     metrics={"test_accuracy": 0.9 + i / 100, "test_loss": 0.3, "train_accuracy": 0.95,
                              "train_loss": 0.2})
    return path


def table(store_path, columns, *extra):
    env = dict(os.environ, COLUMNS=str(columns))
    done = subprocess.run([sys.executable, "-m", "mnistlab.cli", "table", "wide study", "--store", str(store_path),
                           *extra], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def first_column(text, params="1,290,010"):
    """The first column's text, line pieces joined: everything left of where the params cells start."""
    lines = text.splitlines()
    start = next(line.index(params) for line in lines if params in line)
    return "".join(line[:start].strip("│┃ ").replace(" ", "") for line in lines if line.strip())


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_long_names_and_grid_labels_wrap_to_fit_and_lose_no_character(store_path, columns):
    text = table(store_path, columns)
    assert max(len(line) for line in text.splitlines()) <= columns, text
    assert "…" not in text, text
    joined = first_column(text)
    for label in (f"{LONG} [{POINT}]", "mlp", "[red]lit[/red]"):  # markup-like names are printed literally
        assert label.replace(" ", "") in joined, (label, text)
    row = next(r for r in comparison(Store(str(store_path)), "wide study") if r.model == LONG)
    for cell in text_cells(row)[1:]:  # every number whole, though "0.9100 ± 0.0100 (n=3)" may wrap at spaces
        for word in cell.split():
            assert word in text, (word, text)


def test_wide_terminal_keeps_each_label_on_one_line(store_path):
    text = table(store_path, 260)
    assert f"{LONG} [{POINT}]" in text and "┏" in text  # and the bordered table of before


def test_markdown_stays_exact_at_any_width(store_path):
    expected = render(comparison(Store(str(store_path)), "wide study"), "markdown")
    assert table(store_path, 60, "--format", "markdown").strip() == expected
    assert f"| {LONG} [{POINT}] | 1,290,010 |" in expected


def ls(store_path, columns, *args):
    env = dict(os.environ, COLUMNS=str(columns))
    done = subprocess.run([sys.executable, "-m", "mnistlab.cli", "ls", *args, "--store", str(store_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("columns", [60, 80])
def test_ls_folds_long_study_and_model_names_instead_of_cutting_them(store_path, columns):
    """Off a terminal rich assumes 80 columns: `ls` printed `seed000-mlp-de…` and `studies/seed00…`."""
    study = "seed000-mlp-depth-bn-dropout-with-a-long-name"
    Store(str(store_path)).register({"name": study, "path": "studies/seed000_mlp_depth_bn_dropout.toml"},
                                    [spec("other0", LONG, 0, POINT)])
    listing = ls(store_path, columns)
    assert max(len(line) for line in listing.splitlines()) <= columns and "…" not in listing, listing
    assert study in cells(listing, 0) and "studies/seed000_mlp_depth_bn_dropout.toml" in cells(listing, 4), listing
    runs = ls(store_path, columns, "wide study")
    assert max(len(line) for line in runs.splitlines()) <= columns and "…" not in runs, runs
    assert f"{LONG}[{POINT}]".replace(" ", "") in cells(runs, 0), runs


def cells(text, column):
    """A bordered table's column, its folded pieces joined (spaces dropped)."""
    pieces = [line.split("│")[column + 1] for line in text.splitlines() if line.startswith("│")]
    return "".join(p.strip() for p in pieces).replace(" ", "")
