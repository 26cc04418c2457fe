"""The report's figures, built from plain data: plotly figures (curves, overlay, sweep, weight violins,
confusion matrices), the grid of misclassified test images, and their export as PNG files.

Text a user wrote (model names, grid points) arrives here already escaped: plotly.js renders a
subset of HTML in names and titles and decodes entities, so ``&lt;b&gt;`` shows as text.
Statistics over repeats go through :func:`.stats.summarize`, the table's one tested function.

>>> curves("mlp", [history_of_repeat_0, history_of_repeat_1])  # mean line and a ±1 std band
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..images import png_bytes
from .stats import summarize

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
TRAIN, VALIDATION, LEARNING_RATE = "#1f77b4", "#ff7f0e", "#2ca02c"
MAX_VIOLIN_POINTS = 10_000  # per layer: keeps a study of a few models under a few MB
MISTAKES_SHOWN = 24  # misclassified test images drawn per model
LOG_KEYS = ("learning_rate", "lr")  # sweep keys (last dotted part) drawn on a log axis
_AXIS = dict(gridcolor="#e8e8e8", linecolor="#888", zeroline=False, ticks="outside", tickcolor="#888")

# a small template instead of plotly's default, which would repeat ~10 kB of JSON in every figure
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family=FONT, size=12, color="#222"), colorway=PALETTE, paper_bgcolor="white",
    plot_bgcolor="white", xaxis=_AXIS, yaxis=_AXIS, hovermode="closest",
    margin=dict(l=60, r=20, t=60, b=50), title=dict(x=0.01, font=dict(size=14)),
    legend=dict(bgcolor="rgba(255,255,255,0.8)")))


def _figure(rows: int = 1, cols: int = 1, titles: Sequence[str] = (), **kwargs: Any) -> go.Figure:
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles), **kwargs) \
        if rows * cols > 1 else go.Figure()
    fig.update_layout(template=TEMPLATE)
    return fig


def epoch_stats(histories: Sequence[Sequence[dict[str, Any]]], key: str
                ) -> tuple[list[int], list[float], list[float | None]]:
    """Per epoch: mean and sample std of ``key`` over the runs that reached it (NaN left out)."""
    by_epoch: dict[int, list[float | None]] = {}
    for history in histories:
        for row in history:
            by_epoch.setdefault(int(row["epoch"]), []).append(row.get(key))
    epochs, means, stds = [], [], []
    for epoch in sorted(by_epoch):
        stat = summarize(by_epoch[epoch])
        if stat.n:
            epochs.append(epoch)
            means.append(stat.mean)
            stds.append(stat.std)
    return epochs, means, stds


def _line(fig: go.Figure, histories, key: str, name: str, color: str, col: int, legend: bool) -> None:
    """A mean line; with repeats also the mean ± 1 std band as one filled polygon."""
    epochs, means, stds = epoch_stats(histories, key)
    if any(s is not None for s in stds):
        upper = [m + (s or 0.0) for m, s in zip(means, stds)]
        lower = [m - (s or 0.0) for m, s in zip(means, stds)]
        fig.add_trace(go.Scatter(x=epochs + epochs[::-1], y=upper + lower[::-1], fill="toself", mode="lines",
                                 fillcolor=_alpha(color, 0.15), line=dict(width=0), hoverinfo="skip",
                                 name=f"{name} ± 1 std", legendgroup=name, showlegend=False), row=1, col=col)
    fig.add_trace(go.Scatter(x=epochs, y=means, mode="lines+markers", name=name, legendgroup=name,
                             showlegend=legend, line=dict(color=color, width=2), marker=dict(size=5),
                             meta={"metric": key}), row=1, col=col)


def curves(title: str, histories: Sequence[Sequence[dict[str, Any]]], validation: str = "") -> go.Figure:
    """Train vs validation loss and accuracy per epoch (the seeds' ``plt_dynamic``), side by side, and
    the learning rate of each epoch where it varies (a schedule, ReduceLROnPlateau). ``validation``
    names the images the ``val_*`` figures come from, for the title (``test set``, ``10% split``)."""
    varies = lr_varies(histories)
    fig = _figure(1, 3 if varies else 2, ("loss", "accuracy", "learning rate")[:3 if varies else 2],
                  horizontal_spacing=0.07 if varies else 0.1)
    for col, metric in enumerate(("loss", "accuracy"), start=1):
        _line(fig, histories, metric, "train", TRAIN, col, legend=col == 1)
        _line(fig, histories, f"val_{metric}", "validation", VALIDATION, col, legend=col == 1)
    if varies:
        _line(fig, histories, "lr", "learning rate", LEARNING_RATE, 3, legend=True)
        positive = all(r["lr"] > 0 for h in histories for r in h if r.get("lr") is not None)
        fig.update_yaxes(type="log" if positive else None, exponentformat="power", row=1, col=3)
    _epoch_axis(fig, histories)
    n = len(histories)
    note = ("one run" if n == 1 else f"mean ± 1 std over {n} runs") + (f"; validation: {validation}" if validation else "")
    fig.update_layout(title_text=f"{title} <span style='color:#777'>({note})</span>", height=360)
    return fig


def lr_varies(histories: Sequence[Sequence[dict[str, Any]]]) -> bool:
    """True when some run's learning rate changed between epochs."""
    return any(len({r["lr"] for r in h if r.get("lr") is not None}) > 1 for h in histories)


def overlay(series: Sequence[tuple[str, Sequence[Sequence[dict[str, Any]]]]]) -> go.Figure:
    """Every row's mean validation accuracy and loss; clicking a legend entry toggles the row."""
    fig = _figure(1, 2, ("validation accuracy", "validation loss"), horizontal_spacing=0.1)
    for i, (label, histories) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        for col, key in ((1, "val_accuracy"), (2, "val_loss")):
            epochs, means, _ = epoch_stats(histories, key)
            fig.add_trace(go.Scatter(x=epochs, y=means, mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=col == 1, marker=dict(size=4),
                                     line=dict(color=color, width=2)), row=1, col=col)
    _epoch_axis(fig, [h for _, hs in series for h in hs])
    fig.update_layout(title_text="All models: validation curves (mean over repeats)", height=420)
    return fig


def subsample(values: np.ndarray, limit: int = MAX_VIOLIN_POINTS, seed: int = 0) -> np.ndarray:
    """At most ``limit`` values drawn without replacement, the same every time (float32)."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    if flat.size <= limit:
        return flat
    return flat[np.sort(np.random.default_rng(seed).choice(flat.size, limit, replace=False))]


def violins(title: str, kernels: dict[str, np.ndarray]) -> go.Figure:
    """One violin per trained layer's kernel weights, named by layer (``dense_1``, ``conv2d_3``)."""
    fig = _figure()
    for i, (layer, values) in enumerate(kernels.items()):
        sample = subsample(values, seed=i)
        fig.add_trace(go.Violin(y=sample, name=layer, box_visible=True, meanline_visible=True,
                                points=False, line_color=PALETTE[i % len(PALETTE)], spanmode="hard",
                                hoverinfo="y+name", meta={"size": int(np.asarray(values).size)}))
    fig.update_layout(title_text=f"{title}: kernel weights by layer", showlegend=False, height=380,
                      yaxis_title="weight", violingap=0.3)
    return fig


def normalise_rows(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each row divided by its sum (a row with no samples stays zero), rounded to 4 digits."""
    out = []
    for row in matrix:
        total = float(sum(row))
        out.append([round(v / total, 4) if total else 0.0 for v in row])
    return out


def confusion(title: str, train: Sequence[Sequence[int]] | None,
              test: Sequence[Sequence[int]] | None, classes: Sequence[str] | None = None) -> go.Figure:
    """Train and test confusion matrices side by side, row-normalised, values written in the cells;
    axes labelled with the dataset's ``classes`` (default: the labels 0, 1, ...)."""
    parts = [(name, m) for name, m in (("train", train), ("test", test)) if m is not None]
    fig = _figure(1, len(parts), [name for name, _ in parts], horizontal_spacing=0.12)
    for col, (name, matrix) in enumerate(parts, start=1):
        z = normalise_rows(matrix)
        names = class_labels(classes, len(z))
        text = [[f"{v:.2f}" if v >= 0.005 else "" for v in row] for row in z]  # no wall of 0.00
        trace = go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}",
                           coloraxis="coloraxis", name=name, customdata=[list(r) for r in matrix],
                           hovertemplate="true %{y}, predicted %{x}: %{z:.4f} (%{customdata} images)"
                                         "<extra></extra>")
        fig.add_trace(trace, **(dict(row=1, col=col) if len(parts) > 1 else {}))
    fig.update_xaxes(title_text="predicted", type="category")
    fig.update_yaxes(title_text="true", type="category", autorange="reversed")
    fig.update_layout(title_text=f"{title}: confusion matrices (rows sum to 1)", height=440,
                      coloraxis=dict(colorscale="Blues", cmin=0, cmax=1, colorbar=dict(title="share")))
    return fig


def is_log_key(key: str, values: Sequence[Any]) -> bool:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return key.rsplit(".", 1)[-1] in LOG_KEYS and numeric and all(v > 0 for v in values)


def sweep(key: str, rows: Sequence[Any], escape=str) -> go.Figure:
    """Test accuracy against one swept key: one line per model (and other grid values), ±1 std bars."""
    lines: dict[str, list[tuple[Any, Any]]] = {}
    for row in rows:
        stat = row.stats["test_accuracy"]
        if key not in row.sweep or not stat.n:
            continue
        others = sweep_text({k: v for k, v in row.sweep.items() if k != key})
        name = escape(f"{row.model} [{others}]" if others else row.model)
        lines.setdefault(name, []).append((row.sweep[key], stat))
    values = [v for points in lines.values() for v, _ in points]
    log = is_log_key(key, values)
    fig = _figure()
    for name, points in lines.items():
        points.sort(key=lambda p: _order(p[0]))
        fig.add_trace(go.Scatter(
            x=[v if isinstance(v, (int, float)) else escape(str(v)) for v, _ in points],
            y=[s.mean for _, s in points], mode="lines+markers", name=name,
            error_y=dict(type="data", array=[s.std or 0.0 for _, s in points], visible=True),
            customdata=[s.n for _, s in points],
            hovertemplate="%{x}: %{y:.4f} ± %{error_y.array:.4f} (n=%{customdata})"))
    label = escape(key.removeprefix("optimizer."))
    ticks = sorted(set(values), key=_order) if len(set(values)) <= 12 else None
    fig.update_xaxes(title_text=label, type="log" if log else None, tickvals=ticks if log else None,
                     ticktext=[str(v) for v in ticks] if log and ticks else None)  # 0.0003, not 300µ
    fig.update_yaxes(title_text="test accuracy")
    fig.update_layout(title_text=f"Test accuracy against {label} (mean ± 1 std over repeats)", height=400)
    return fig


def sweep_text(point: dict[str, Any]) -> str:
    """``learning_rate=0.01, units=64``: a grid point as the tables and legends show it."""
    return ", ".join(f"{k.removeprefix('optimizer.')}={v}" for k, v in sorted(point.items()))


def _order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _alpha(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _epoch_axis(fig: go.Figure, histories) -> None:
    last = max((int(r["epoch"]) for h in histories for r in h), default=0)
    fig.update_xaxes(title_text="epoch", dtick=1 if last <= 20 else None)


# ---------------------------------------------------------------- weights, images, PNG files
def kernels(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Kernel weights by layer name: ``.weight`` tensors of 2+ dims (1-D ones are BatchNorm's)."""
    out: dict[str, list[np.ndarray]] = {}
    for name in sorted(arrays, key=_natural):
        if name.endswith(".weight") and arrays[name].ndim >= 2:
            out.setdefault(name.split(".", 1)[0], []).append(arrays[name].ravel())
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


class ImageCache:
    """The dataset's test images from the cache ``$MNISTLAB_DATA`` or ``~/.cache/mnistlab`` (as data.py)."""

    def __init__(self) -> None:
        self.loaded: dict[str, np.ndarray | None] = {}

    @staticmethod
    def path(dataset: str) -> Path:
        cache = Path(os.environ.get("MNISTLAB_DATA") or Path.home() / ".cache" / "mnistlab").expanduser()
        return cache / f"{dataset}.npz"

    def get(self, dataset: str) -> np.ndarray | None:
        if dataset not in self.loaded:
            try:
                with np.load(self.path(dataset), allow_pickle=False) as npz:
                    self.loaded[dataset] = npz["x_test"]
            except (OSError, KeyError, ValueError):
                self.loaded[dataset] = None
        return self.loaded[dataset]


def class_labels(classes: Sequence[str] | None, n: int) -> list[str]:
    """The names of labels 0..n-1, escaped (a plot and the HTML render them): the dataset's, else the numbers."""
    return [html.escape(str(classes[i])) if classes is not None and i < len(classes) else str(i) for i in range(n)]


def mistakes_grid(mistakes: list[dict[str, Any]], x_test: np.ndarray | None, path: Path,
                  classes: Sequence[str] | None = None) -> str:
    """HTML: the first misclassified test images as inline PNGs, true → predicted (class names where
    ``classes`` gives them) and confidence."""
    shown = mistakes[:MISTAKES_SHOWN]
    title = f"<h4>First {len(shown)} of {len(mistakes)} misclassified test images (true → predicted, confidence)</h4>"
    if x_test is None:
        return (f'{title}<p class="note missing-images">test images not available ({html.escape(str(path))} '
                f"not found; `mnistlab data fetch {html.escape(path.stem)}` caches them)</p>")
    cells, names = [], class_labels(classes, len(classes) if classes else 10)
    for m in shown:
        index = int(m["index"])
        picture = (f'<img alt="test image {index}" src="data:image/png;base64,'
                   f'{base64.b64encode(png_bytes(x_test[index])).decode()}">') if 0 <= index < len(x_test) else "?"
        true, predicted = (names[int(m[k])] if 0 <= int(m[k]) < len(names) else str(int(m[k]))
                           for k in ("true", "predicted"))
        cells.append(f'<figure>{picture}<figcaption>{true} → {predicted} '
                     f'<span>{float(m["confidence"]):.0%}</span></figcaption></figure>')
    return f'{title}<div class="mistakes">{"".join(cells)}</div>'


def summed(matrices: Sequence[Any]) -> tuple[list[list[int]] | None, int]:
    """The sum of the matrices present (confusion counts over repeats) and how many there were."""
    present = [np.asarray(m, dtype=np.int64) for m in matrices if m]
    return (np.sum(present, axis=0).tolist() if present else None), len(present)


def kaleido_installed() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def write_pngs(figs: Sequence[tuple[str, go.Figure]], directory: Path) -> list[Path]:
    """Each figure as ``DIRECTORY/STEM.png`` through kaleido (one Chromium for all of them)."""
    import plotly.io as pio
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.png" for stem, _ in figs]
    if figs:
        pio.write_images([fig for _, fig in figs], paths, width=1100,
                         height=[int(fig.layout.height or 450) for _, fig in figs])
    return paths


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
