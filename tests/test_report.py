"""The HTML report, on a fake study written through the store's own API (no training, no torch).

The fake study has repeats (a band), a sweep over ``optimizer.learning_rate`` (a log axis), a
diverged, a failed and a pending run, and a model named ``<script>alert(1)</script>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mnistlab.report.figures import MAX_VIOLIN_POINTS, png_bytes
from mnistlab.report.html import ReportError, write_report
from mnistlab.report.table import best, comparison
from mnistlab.store import Store

XSS = "<script>alert(1)</script>"
STUDY = "demo"
RATES = (0.001, 0.01, 0.1)
ENV = {"mnistlab": "0.1.0", "torch": "2.13.0", "python": "3.11.2", "platform": "Linux-x86_64",
       "device": "cpu", "device_name": "x86_64", "threads": 2, "cpus": 2}


def spec(model: str, rate: float, repeat: int) -> dict:
    ident = hashlib.sha256(f"{model}|{rate}|{repeat}".encode()).hexdigest()[:16]
    return {"id": ident, "layers": ["Dense(32, activation='relu')", "Dense(10, activation='softmax')"],
            "dataset": "mnist", "epochs": 3, "batch_size": 128, "optimizer": f"adam(learning_rate={rate})",
            "loss": "categorical_crossentropy", "validation": "test", "train_size": None, "test_size": None,
            "seed": repeat, "study": STUDY, "model": model, "repeat": repeat,
            "sweep": {"optimizer.learning_rate": rate}, "point": f"learning_rate={rate}"}


# (model, rate) -> statuses of its repeats
PLAN = {("mlp", 0.001): ["done", "done", "done"], ("mlp", 0.01): ["done", "diverged"], ("mlp", 0.1): ["done"],
        (XSS, 0.001): ["done"], (XSS, 0.01): ["failed"], (XSS, 0.1): ["pending"]}


def history(rng: np.random.Generator, epochs: int = 3) -> list[dict]:
    return [{"epoch": e, "loss": float(rng.uniform(0.1, 1)), "accuracy": float(rng.uniform(0.7, 1)),
             "val_loss": float(rng.uniform(0.1, 1)), "val_accuracy": float(rng.uniform(0.7, 1)), "seconds": 1.5}
            for e in range(1, epochs + 1)]


def finish_done(store: Store, s: dict, rng: np.random.Generator) -> None:
    for row in history(rng):
        store.add_epoch(s["id"], row)
    store.save_arrays(s["id"], "weights", {
        "dense_1.weight": rng.normal(0, 0.05, (32, 784)).astype(np.float32),  # 25,088 > the violin cap
        "dense_1.bias": np.zeros(32, np.float32),
        "batch_normalization_1.weight": np.ones(32, np.float32),  # 1-D: BatchNorm, not a kernel
        "dense_2.weight": rng.normal(0, 0.2, (10, 32)).astype(np.float32)})
    for kind in ("confusion_train", "confusion_test"):
        store.save_json(s["id"], kind, rng.integers(0, 50, (10, 10)).tolist())
    store.save_json(s["id"], "mistakes", [{"index": int(i), "true": int(i % 10), "predicted": int((i + 1) % 10),
                                           "confidence": 0.9} for i in rng.integers(0, 100, 30)])
    metrics = {m: float(rng.uniform(0.05, 0.99)) for m in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")}
    store.finish(s["id"], "done", params=(25450, 25450, 0), metrics=metrics, seconds=float(rng.uniform(2, 9)),
                 environment=ENV)


def make_study(tmp: Path) -> Store:
    """A store at ``tmp/x.db`` holding the fake study ``demo``."""
    store = Store(f"sqlite:///{tmp}/x.db")
    specs = {key: [spec(key[0], key[1], r) for r in range(len(statuses))] for key, statuses in PLAN.items()}
    store.register({"name": STUDY, "description": "Learning rates & <b>bold</b> claims\nsecond line",
                    "path": "studies/demo.toml", "source": f'name = "demo"\n# {XSS}\n'},
                   [s for group in specs.values() for s in group])
    rng = np.random.default_rng(0)
    for key, statuses in PLAN.items():
        for s, status in zip(specs[key], statuses):
            if status == "pending":
                continue
            store.claim(s["id"])
            if status == "done":
                finish_done(store, s, rng)
            elif status == "diverged":
                store.add_epoch(s["id"], {"epoch": 1, "loss": float("nan"), "accuracy": 0.1})
                store.finish(s["id"], "diverged", error="loss is NaN at epoch 1", environment=ENV)
            elif status == "failed":
                store.finish(s["id"], "failed", error="RuntimeError: boom", environment=ENV)
    return store


def fake_images(directory: Path) -> None:
    x_test = np.random.default_rng(1).integers(0, 256, (100, 28, 28), dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "mnist.npz", x_test=x_test)


# ---------------------------------------------------------------- reading the page back
class Page(HTMLParser):
    """Tags with attributes, figure JSON by stem, table cells, text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.json: dict[str, str] = {}
        self.cells: list[dict] = []
        self.text: list[str] = []
        self._script: str | None = None
        self._cell: dict | None = None
        self.feed(text)
        stems = {a["data-fig"]: a["data-stem"] for t, a in self.tags if t == "div" and "data-fig" in a}
        self.figures = {stems[k]: json.loads(v) for k, v in self.json.items()}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script" and attrs.get("type") == "application/json":
            self._script = attrs["id"]
            self.json[self._script] = ""
        if tag == "td":
            self._cell = dict(attrs, text="")
            self.cells.append(self._cell)
        if tag == "tr":
            self.cells.append({"row": attrs.get("data-label")})

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._script:
            self.json[self._script] += data
        else:
            self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data

    def figure(self, prefix: str) -> dict:
        found = [fig for stem, fig in self.figures.items() if stem.split("-", 1)[1].startswith(prefix)]
        assert len(found) == 1, (prefix, list(self.figures))
        return found[0]

    def rows(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for cell in self.cells:
            if "row" in cell:
                current = out.setdefault(cell["row"], [])
            else:
                current.append(cell)
        out.pop(None, None)  # the header row
        return out


def values(data) -> np.ndarray:
    """A plotly data array: a list, or plotly's typed-array form ``{dtype, bdata}``."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray(data, dtype=float)


def trace(fig: dict, name: str, xaxis: str = "x") -> dict:
    found = [t for t in fig["data"] if t.get("name") == name and t.get("xaxis", "x") == xaxis]
    assert len(found) == 1, (name, [t.get("name") for t in fig["data"]])
    return found[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    fake_images(tmp / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_DATA", str(tmp / "data"))
        store = make_study(tmp)
        path = write_report(store, STUDY, tmp / "out" / "demo.html")
    text = path.read_text(encoding="utf-8")
    return store, text, Page(text)


# ---------------------------------------------------------------- tests
def test_curves_are_the_stored_history(report):
    store, _, page = report
    run = next(r for r in store.runs(study=STUDY) if r["model"] == "mlp" and r["point"] == "learning_rate=0.1")
    stored = store.history(run["id"])
    fig = page.figure("curves-mlp-learning-rate-0-1")
    loss, accuracy = "x", "x2"  # the two panels
    assert values(trace(fig, "train", loss)["y"]).tolist() == [h["loss"] for h in stored]
    assert values(trace(fig, "validation", loss)["y"]).tolist() == [h["val_loss"] for h in stored]
    assert values(trace(fig, "train", accuracy)["y"]).tolist() == [h["accuracy"] for h in stored]
    assert values(trace(fig, "validation", accuracy)["y"]).tolist() == [h["val_accuracy"] for h in stored]
    assert values(trace(fig, "train", loss)["x"]).tolist() == [1, 2, 3]
    assert not [t for t in fig["data"] if t.get("fill")], "one run: no band"


def test_repeats_draw_mean_and_std_band(report):
    store, _, page = report
    ids = [r["id"] for r in store.runs(study=STUDY) if r["model"] == "mlp" and r["point"] == "learning_rate=0.001"]
    histories = store.histories(ids)
    per_epoch = [[histories[i][e]["val_loss"] for i in ids] for e in range(3)]
    mean = [sum(v) / 3 for v in per_epoch]
    std = [math.sqrt(sum((x - m) ** 2 for x in v) / 2) for v, m in zip(per_epoch, mean)]  # sample std by hand
    fig = page.figure("curves-mlp-learning-rate-0-001")
    assert values(trace(fig, "validation")["y"]) == pytest.approx(mean)
    band = trace(fig, "validation ± 1 std")
    assert band["fill"] == "toself"
    assert values(band["x"]).tolist() == [1, 2, 3, 3, 2, 1]
    upper, lower = values(band["y"])[:3], values(band["y"])[3:][::-1]
    assert upper == pytest.approx([m + s for m, s in zip(mean, std)])
    assert lower == pytest.approx([m - s for m, s in zip(mean, std)])
    assert "mean ± 1 std over 3 runs" in fig["layout"]["title"]["text"]


def test_overlay_has_every_row_with_curves(report):
    store, _, page = report
    fig = page.figure("overlay")
    names = {t["name"] for t in fig["data"]}
    labels = {row.label for row in comparison(store, STUDY) if row.statuses.get("done")}
    assert names == {label.replace("<", "&lt;").replace(">", "&gt;") for label in labels}


def test_violins_named_by_layer_and_subsampled(report):
    _, _, page = report
    fig = page.figure("weights-mlp-learning-rate-0-001")
    assert [t["type"] for t in fig["data"]] == ["violin", "violin"]
    assert [t["name"] for t in fig["data"]] == ["dense_1", "dense_2"]  # bias and BatchNorm skipped
    dense_1, dense_2 = (values(t["y"]) for t in fig["data"])
    assert len(dense_1) == MAX_VIOLIN_POINTS and fig["data"][0]["meta"]["size"] == 32 * 784
    assert len(dense_2) == 320
    assert abs(float(np.std(dense_1)) - 0.05) < 0.005


def test_confusion_rows_are_normalised(report):
    store, _, page = report
    fig = page.figure("confusion-mlp-learning-rate-0-001")
    heatmaps = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heatmaps] == ["train", "test"]
    for t in heatmaps:
        for row in t["z"]:
            assert sum(row) == pytest.approx(1, abs=1e-3)
    ids = [r["id"] for r in store.runs(study=STUDY) if r["model"] == "mlp" and r["point"] == "learning_rate=0.001"
           and r["status"] == "done"]
    summed = np.sum([store.load_json(i, "confusion_test") for i in ids], axis=0)  # summed over 3 repeats
    assert heatmaps[1]["customdata"] == summed.tolist()
    assert np.asarray(heatmaps[1]["z"]) == pytest.approx(summed / summed.sum(1, keepdims=True), abs=1e-4)


def test_mistakes_grid_inlines_png_images(report):
    store, text, page = report
    images = [a for t, a in page.tags if t == "img"]
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    assert len(images) == 24 * 4  # four rows have a done run, each with 30 mistakes stored
    first = next(r for r in store.runs(study=STUDY) if r["status"] == "done")
    mistake = store.load_json(first["id"], "mistakes")[0]
    assert images[0]["alt"] == f"test image {mistake['index']}"
    assert f"{mistake['true']} → {mistake['predicted']} <span>90%</span>" in text
    x_test = np.load(Path(store.engine.url.database).parent / "data" / "mnist.npz")["x_test"]
    assert base64.b64decode(images[0]["src"].split(",", 1)[1]) == png_bytes(x_test[mistake["index"]])


def test_sweep_figure_x_values_and_log_axis(report):
    store, _, page = report
    fig = page.figure("sweep-optimizer-learning-rate")
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert fig["layout"]["xaxis"]["tickvals"] == list(RATES)
    assert fig["layout"]["xaxis"]["ticktext"] == ["0.001", "0.01", "0.1"]
    mlp = trace(fig, "mlp")
    rows = [r for r in comparison(store, STUDY) if r.model == "mlp"]
    assert values(mlp["x"]).tolist() == list(RATES)
    assert values(mlp["y"]) == pytest.approx([r.stats["test_accuracy"].mean for r in rows])
    assert values(mlp["error_y"]["array"]) == pytest.approx([r.stats["test_accuracy"].std or 0 for r in rows])
    xss = trace(fig, "&lt;script&gt;alert(1)&lt;/script&gt;")
    assert values(xss["x"]).tolist() == [0.001]  # failed and pending points have no accuracy


def test_table_numbers_are_comparisons(report):
    store, _, page = report
    rows = comparison(store, STUDY)
    table = page.rows()
    assert list(table) == [r.label for r in rows]
    for row in rows:
        cells = {c["data-metric"]: c for c in table[row.label] if "data-metric" in c}
        for metric, cell in cells.items():
            stat = row.stats[metric]
            assert cell["text"] == stat.text(1 if metric == "seconds" else 4)
            assert (float(cell["data-sort"]) == stat.mean) if stat.n else cell["data-sort"] == ""
    winners = best(rows)
    marked = {c["data-metric"]: label for label, cells in table.items() for c in cells
              if "best" in c.get("class", "").split()}
    assert marked == winners


def test_statuses_are_marked(report):
    _, text, page = report
    badges = [a["class"] for t, a in page.tags if t == "span" and "badge" in a.get("class", "")]
    for status in ("s-diverged", "s-failed", "s-pending", "s-done"):
        assert any(status in b for b in badges), status
    incomplete = [a["data-label"] for t, a in page.tags if t == "tr" and a.get("class") == "incomplete"]
    assert "mlp [learning_rate=0.01]" in incomplete
    assert "sortable" in text and "addEventListener(\"click\"" in text


def test_header_facts(report):
    _, text, page = report
    body = "".join(page.text)
    assert "Learning rates & <b>bold</b> claims" in body  # shown as text, not markup
    assert "Learning rates &amp; &lt;b&gt;bold&lt;/b&gt; claims" in text
    for fact in ("mnist", "adam(learning_rate=0.001)", "torch 2.13.0", "Python 3.11.2", "cpu (x86_64)"):
        assert fact in body, fact
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC → \d{4}-\d\d-\d\d", body)


def test_user_strings_are_escaped(report):
    _, text, page = report
    assert "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert XSS in "".join(page.text)  # the table shows the name as text
    scripts = [a for t, a in page.tags if t == "script"]
    assert len(scripts) == 3 + len(page.figures)  # error marker, plotly.js, page JS, one JSON each


def test_self_contained(report):
    _, text, page = report
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not re.match(r"(https?:)?//", value), (tag, key, value)
        assert not (tag == "link" and attrs.get("rel") == "stylesheet"), attrs
        assert not (tag == "script" and "src" in attrs), attrs
    assert text.count("plotly.js v") == 1  # inlined once


def test_images_missing_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "nothing"))
    store = make_study(tmp_path)
    text = write_report(store, STUDY, tmp_path / "r.html").read_text()
    assert "test images not available" in text
    assert "<img" not in text


def test_unfinished_study_still_reports(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/x.db")
    running, pending = spec("cnn", 0.01, 0), spec("cnn", 0.01, 1)
    store.register({"name": "wip", "description": ""}, [running, pending])
    store.claim(running["id"])
    rows = history(np.random.default_rng(2), epochs=2)
    for row in rows:
        store.add_epoch(running["id"], row)
    page = Page(write_report(store, "wip", tmp_path / "r.html").read_text())
    fig = page.figure("curves-cnn")
    assert values(trace(fig, "train")["y"]).tolist() == [r["loss"] for r in rows]  # the epochs so far
    badges = {a["class"] for t, a in page.tags if t == "span" and "badge" in a.get("class", "")}
    assert {"badge s-running", "badge s-pending"} <= badges
    empty = Store(f"sqlite:///{tmp_path}/empty.db")
    empty.register({"name": "nothing", "description": ""}, [])
    assert "This study has no runs yet." in write_report(empty, "nothing", tmp_path / "e.html").read_text()


def test_unknown_study_is_a_report_error(tmp_path):
    store = make_study(tmp_path)
    with pytest.raises(ReportError, match="'nope' is not in the store"):
        write_report(store, "nope", tmp_path / "r.html")


def test_png_encoder_round_trip():
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    data = png_bytes(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import zlib
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(28, 29)
    assert (raw[:, 0] == 0).all() and (raw[:, 1:] == image).all()


def test_report_never_imports_torch():
    code = ("import sys, mnistlab.report.html, mnistlab.report.figures; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_png_export(tmp_path, monkeypatch):
    pytest.importorskip("kaleido", reason="kaleido not installed: pip install 'mnistlab[png]'")
    from shutil import which
    if not (which("chromium") or which("chromium-browser") or which("google-chrome")):
        pytest.skip("no Chrome/Chromium for kaleido")
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "nothing"))
    store = make_study(tmp_path)
    write_report(store, STUDY, tmp_path / "r.html", png_dir=tmp_path / "png")
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == len(Page((tmp_path / "r.html").read_text()).figures)
    assert pngs[0].name.startswith("01-") and any(p.name.startswith("02-curves-") for p in pngs)  # in page order
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_png_without_kaleido_says_how(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido now raises ImportError
    store = make_study(tmp_path)
    with pytest.raises(ReportError, match=r"pip install 'mnistlab\[png\]'.*Chromium"):
        write_report(store, STUDY, tmp_path / "r.html", png_dir=tmp_path / "png")
