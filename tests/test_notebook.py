"""The notebook API: studies from Python values (same schema and errors as TOML, TOML round trip),
results as DataFrames, the table and report as notebook HTML, and tests/notebooks/quickstart.ipynb
executed end to end in a Jupyter kernel."""

import dataclasses
import html
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mnistlab
from mnistlab.errors import MnistlabError, StoreError, StudyError
from mnistlab.spec import expand, load_study, parse_study

ROOT = Path(__file__).resolve().parent.parent
RELU = "Dense(32, activation='relu')"
OUT = "Dense(10, activation='softmax')"
SLICE = {"epochs": 2, "batch_size": 64, "train_size": 600, "test_size": 200}


def same(a, b):
    """Equal studies: the same schema values and the same runs (ids)."""
    dump = lambda s: s.model_dump(exclude={"path", "source"})  # noqa: E731
    return dump(a) == dump(b) and [r.id for r in expand(a)] == [r.id for r in expand(b)]


def study_error(**kwargs) -> str:
    with pytest.raises(StudyError) as info:
        mnistlab.study(**{"name": "s", **kwargs})
    assert "\n" not in str(info.value)
    return str(info.value)


def test_import_loads_neither_torch_nor_pandas():
    code = ("import sys, mnistlab; mnistlab.results; mnistlab.Results; mnistlab.Store; "
            "print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_study_from_python_equals_the_same_study_from_toml():
    from_toml = parse_study(f"""
name = "widths"
seed = 3
repeats = 2
[train]
epochs = 2
optimizer = "SGD(lr=0.1)"
[[model]]
name = "mlp"
layers = ["Dense({{units}}, activation='relu')", "{OUT}"]
[model.sweep]
units = [16, 32]
[[model]]
name = "linear"
layers = ["{OUT}"]
epochs = 3
[sweep]
"optimizer.learning_rate" = [0.01, 0.1]
""")
    settings = {"name": "widths", "seed": 3, "repeats": 2, "train": {"epochs": 2, "optimizer": "SGD(lr=0.1)"},
                "sweep": {"optimizer.learning_rate": np.array([0.01, 0.1])}}
    mlp = {"layers": ["Dense({units}, activation='relu')", OUT], "sweep": {"units": (16, 32)}}
    by_list = mnistlab.study(**settings, model=[{"name": "mlp", **mlp}, {"name": "linear", "layers": [OUT], "epochs": 3}])
    by_dict = mnistlab.study(**settings, models={"mlp": mlp, "linear": {"layers": [OUT], "epochs": 3}})
    assert same(from_toml, by_list) and same(by_list, by_dict) and len(expand(by_dict)) == 2 * 2 * 2 + 2 * 2


@pytest.mark.parametrize("kwargs,expected", [
    ({"models": {"m": [OUT]}, "train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1 (got 0)"),
    ({"models": {"m": [OUT]}, "train": {"epoch": 2}}, "train.epoch: unknown field; expected one of: batch_size, callbacks, device, epochs,"),
    ({"models": [{"name": "m"}]}, "model[1].layers: required field is missing"),
    ({}, "model: required field is missing"),
    ({"models": {"m": [OUT]}, "modles": 1}, "modles: unknown field; expected one of:"),
    ({"models": {"m": ["Dence(64)", OUT]}}, "model 'm': layer 1 'Dence(64)': unknown layer 'Dence'; did you mean 'Dense'?"),
    ({"models": {"m": [OUT]}, "train": {"optimizer": "adamm"}}, "did you mean 'adam'"),
    ({"models": {"m": [OUT]}, "sweep": {"unit": [1, 2]}}, "sweep 'unit': not a setting"),
    ({"models": {"m": [OUT]}, "model": [{"name": "x", "layers": [OUT]}]}, "give models= or model=, not both"),
    ({"models": {"m": [OUT]}, "repeats": 0}, "repeats: Input should be greater than or equal to 1"),
])
def test_python_values_get_the_errors_a_file_gets(kwargs, expected):
    assert expected in study_error(**kwargs)


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_builtin_study_round_trips_through_to_toml(path, tmp_path):
    study = load_study(path)
    text = study.to_toml(tmp_path / "again.toml")
    assert (tmp_path / "again.toml").read_text() == text
    assert same(parse_study(text), study)


def test_python_study_round_trips_and_keeps_its_toml_as_source():
    study = mnistlab.study(name="np", models={"a": ["Dense({units}, activation='relu')", OUT]},
                           sweep={"units": np.arange(16, 48, 16), "batch_size": (32, 64)},
                           train={"epochs": np.int64(2)}, description='quotes " and \\ and\nnewlines')
    assert study.models[0].sweep == {} and study.sweep["units"] == [16, 32] and study.train.epochs == 2
    assert type(study.sweep["units"][0]) is int  # numpy scalars become TOML's kinds
    again = parse_study(study.to_toml())
    assert same(again, study) and again.description == study.description
    assert study.source == study.to_toml()  # what the store keeps and worker processes parse


def test_to_toml_names_a_sweep_toml_cannot_hold():
    study = mnistlab.study(name="s", models={"m": [OUT]}, sweep={"epochs": [1, 2]})
    bad = study.model_copy(update={"sweep": {"epochs": [1, object()]}})
    with pytest.raises(StudyError, match="sweep 'epochs': cannot be written as TOML"):
        bad.to_toml()


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Two tiny MLPs (one with markup-like characters in its name), two repeats, trained on a slice."""
    where = tmp_path_factory.mktemp("ran")
    study = mnistlab.study(name="nb <&>", models={"mlp 32": [RELU, OUT], "<b>mlp</b> & 16": ["Dense(16)", OUT]},
                           train=SLICE, repeats=2, seed=5)
    return study, mnistlab.run(study, store=str(where / "nb.db")), where


def test_run_returns_outcome_fields_and_dataframes(ran, capfd):
    study, results, _ = ran
    assert len(results.trained) == 4 and results.resumed == results.skipped == results.failed == [] \
        and results.diverged == []
    assert capfd.readouterr() == ("", "")  # plain Python: no progress output
    runs = results.runs()
    assert isinstance(runs, pd.DataFrame) and runs.shape[0] == 4
    assert list(runs["id"]) == [s.id for s in expand(study)]
    assert set(runs["status"]) == {"done"} and runs["test_accuracy"].between(0.3, 1.0).all()
    assert list(runs["train_size"].unique()) == [600] and runs["layers"].iloc[0] == (RELU, OUT)
    history = results.history()
    assert history.shape[0] == 4 * 2 and list(history["epoch"][:2]) == [1, 2]
    assert history.groupby("id").size().eq(2).all() and history["val_accuracy"].notna().all()


def test_runs_frame_flattens_sweep_values_into_columns(tmp_path):
    study = mnistlab.study(name="sw", models={"m": ["Dense({units})", OUT]}, sweep={"units": [8, 16], "epochs": [1]},
                           train={**SLICE, "train_size": 200, "test_size": 100})
    runs = mnistlab.run(study, store=str(tmp_path / "sw.db")).runs()
    assert list(runs["units"]) == [8, 16] and list(runs["sweep.epochs"]) == [1, 1] and list(runs["epochs"]) == [1, 1]


def test_table_is_a_dataframe_shown_as_the_reports_table(ran):
    study, results, _ = ran
    table = results.table()
    assert isinstance(table, pd.DataFrame) and list(table["model"]) == ["mlp 32", "<b>mlp</b> & 16"]
    runs = results.runs()
    means = runs.groupby("model", sort=False)["test_accuracy"].agg(["mean", "std"])
    assert table["test_accuracy"].tolist() == pytest.approx(means["mean"].tolist())
    assert table["test_accuracy_std"].tolist() == pytest.approx(means["std"].tolist())
    assert list(table["done"]) == [2, 2]
    page = table._repr_html_()
    assert 'id="comparison"' in page and "mnistlab-table" in page and "mlp 32" in page
    assert "&lt;b&gt;mlp&lt;/b&gt; &amp; 16" in page and "<b>mlp" not in page  # user text escaped
    assert "±" in page  # mean ± std, as in the report
    assert type(table.sort_values("test_accuracy")) is pd.DataFrame  # derived frames are plain


def test_report_writes_the_file_and_shows_it_inline_escaped(ran, tmp_path):
    study, results, _ = ran
    view = results.report(tmp_path / "r.html")
    assert Path(view) == tmp_path / "r.html" and (tmp_path / "r.html").stat().st_size > 10_000
    shown = view._repr_html_()
    srcdoc = shown.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert "<" not in srcdoc and html.unescape(srcdoc) == (tmp_path / "r.html").read_text()
    assert "&amp;lt;b&amp;gt;mlp" in srcdoc  # the page escaped the name; the attribute escaped the page


def test_results_reopen_without_running(ran):
    study, results, where = ran
    again = mnistlab.results("nb <&>", store=str(where / "nb.db"))
    assert again.trained == [] and again.runs().equals(results.runs())
    assert mnistlab.results(study, store=results.store).history().shape == results.history().shape
    with pytest.raises(StoreError, match="study 'nope' is not in the store .*studies there: 'nb <&>'"):
        mnistlab.results("nope", store=str(where / "nb.db"))


def test_compare_is_a_hook_for_the_statistics_module(ran, monkeypatch):
    _, results, _ = ran
    monkeypatch.setitem(sys.modules, "mnistlab.report.compare", None)  # as if it did not exist
    with pytest.raises(MnistlabError, match="needs the statistics module") as info:
        results.compare()
    assert "\n" not in str(info.value)

    @dataclasses.dataclass
    class Comparison:
        config: str
        difference: float

    calls = []
    fake = types.ModuleType("mnistlab.report.compare")
    fake.compare = lambda store, study, baseline=None, metric="test_accuracy": calls.append(
        (study, baseline, metric)) or [Comparison("mlp 32", 0.0), Comparison("x", -0.01)]
    monkeypatch.setitem(sys.modules, "mnistlab.report.compare", fake)
    frame = results.compare(baseline="mlp 32")
    assert calls == [("nb <&>", "mlp 32", "test_accuracy")] and list(frame["difference"]) == [0.0, -0.01]


def test_missing_pandas_is_one_line(ran, monkeypatch):
    _, results, _ = ran
    monkeypatch.delitem(sys.modules, "mnistlab.frames", raising=False)  # as in a fresh process
    monkeypatch.delattr(mnistlab, "frames", raising=False)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MnistlabError, match=r"^results as DataFrames need pandas: pip install 'mnistlab\[notebook\]'$"):
        results.runs()


def test_progress_true_shows_a_bar_outside_jupyter(ran, capfd):
    study, results, _ = ran
    again = mnistlab.run(study, store=results.store, progress=True)
    assert len(again.skipped) == 4
    assert "runs" in capfd.readouterr().err  # tqdm's text bar on stderr outside a notebook


# ---------------------------------------------------------------- the notebook, end to end
def kernel_for_this_python(tmp_path, monkeypatch) -> str:
    """A kernelspec running this interpreter with this checkout's source first on its path."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "mnistlab-test"
    spec_dir.mkdir(parents=True)
    src = str(Path(mnistlab.__file__).resolve().parents[1])
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mnistlab test", "language": "python", "env": {"PYTHONPATH": src}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "mnistlab-test"


def outputs(cell, mime):
    return [o["data"][mime] for o in cell.outputs if mime in o.get("data", {})]


def test_quickstart_notebook_runs_end_to_end(tmp_path, monkeypatch, mnist):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    notebook = nbformat.read(ROOT / "tests" / "notebooks" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name=kernel_for_this_python(tmp_path, monkeypatch),
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    _, build, train, frames, table, report = notebook.cells
    assert 'name = "quickstart"' in "".join(o.get("text", "") for o in build.outputs)
    assert same(load_study(tmp_path / "quickstart.toml"), mnistlab.study(
        name="quickstart", train=SLICE, models={"mlp 32": [RELU, OUT], "mlp 64": ["Dense(64, activation='relu')", OUT]}))
    shown = outputs(train, "text/plain")
    assert any("trained 2" in text for text in shown)  # the Results repr
    streams = "".join(o.get("text", "") for o in train.outputs)  # tqdm's text bar where widgets are missing
    assert outputs(train, "application/vnd.jupyter.widget-view+json") or "runs" in streams, \
        "a progress bar while training"
    assert "2 4" in "".join(o.get("text", "") for o in frames.outputs)  # 2 runs, 2 x 2 epochs
    assert "<table" in outputs(frames, "text/html")[0]  # pandas' own HTML for plain frames
    page = outputs(table, "text/html")[0]
    assert "mnistlab-table" in page and "mlp 32" in page and "mlp 64" in page
    inline = outputs(report, "text/html")[0]
    assert inline.startswith("<iframe srcdoc=") and (tmp_path / "quickstart-report.html").stat().st_size > 10_000
