"""The HTML report: one self-contained file (plotly.js inlined once, no URL), optional PNG figures.

>>> write_report(Store("sqlite:///mnistlab.db"), "quick", "quick-report.html", png_dir="figures")

The table is :func:`.table.comparison`, the terminal table's code path. Every string a user wrote
(study, description, model names, grid points, optimizer text) is escaped with :func:`html.escape`;
figure JSON is embedded with every ``<`` and ``>`` as ``\\u003c``/``\\u003e`` so no name can end
its ``<script>``. Never imports torch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import plotly.graph_objects as go
import plotly.offline

from ..errors import DamagedArtifact, ReportError
from ..store import Store
from ..wording import duration, hardware, software
from . import differences, figures
from .assets import CSS, HEAD_JS, TAIL_JS
from .cells import METRIC_COLUMNS, badge, esc, table_row, verdicts
from .compare import Result, compare
from .figures import ImageCache, kernels, slug
from .table import HIGHER_IS_BETTER, Row, best, comparison, split_header, validation_text

PNG_HINT = ("pip install 'mnistlab[png]' (kaleido, which drives a Chrome or Chromium: "
            "install one too, e.g. apt-get install chromium)")
@dataclass
class Page:
    """The figures collected while sections render; each becomes a div plus its JSON."""

    figures: list[tuple[str, go.Figure]] = field(default_factory=list)  # (file stem, figure)

    def figure(self, stem: str, fig: go.Figure) -> str:
        i = len(self.figures)
        self.figures.append((f"{i + 1:02d}-{stem}", fig))
        height = int(fig.layout.height or 450)
        return (f'<div class="plot" id="fig-{i}" data-fig="fig-{i}-data" data-stem="{self.figures[-1][0]}" '
                f'style="height:{height}px"></div>')

    def scripts(self) -> str:
        return "\n".join(f'<script type="application/json" id="fig-{i}-data">{embed_json(fig)}</script>'
                         for i, (_, fig) in enumerate(self.figures))


def embed_json(fig: go.Figure) -> str:
    """The figure's JSON, safe inside ``<script>``: no ``<`` or ``>`` can close it or open a comment."""
    return fig.to_json().replace("<", "\\u003c").replace(">", "\\u003e")


@dataclass
class Study:
    """What the sections read: the store's study record, runs, histories and the table rows."""

    store: Store
    record: dict[str, Any]
    rows: list[Row]
    runs: dict[str, dict[str, Any]]  # run id -> run
    histories: dict[str, list[dict[str, Any]]]
    differences: Result | None = None  # every configuration against the first, by test accuracy
    classes: dict[str, list[str]] = field(default_factory=dict)  # dataset -> class names (api.class_names())

    def row_runs(self, row: Row, done_only: bool = False) -> list[dict[str, Any]]:
        runs = [self.runs[i] for i in row.run_ids]
        return [r for r in runs if r["status"] == "done"] if done_only else runs


def load(store: Store, name: str, classes: dict[str, list[str]] | None = None) -> Study:
    record = store.study(name)
    if record is None:
        known = ", ".join(repr(s["name"]) for s in store.studies()[:8]) or "none"
        raise ReportError(f"study {name!r} is not in the store {store.where} (studies there: {known}); "
                          "run it first with `mnistlab run STUDY.toml`")
    runs = {r["id"]: r for r in store.runs(study=name)}
    histories = store.histories(runs)
    for run_id, history in histories.items():  # the epochs table has no lr column: it is an artifact
        for row, lr in zip(history, store.load_json(run_id, "lr") or []):
            row["lr"] = lr
    rows = comparison(store, name)
    return Study(store, record, rows, runs, histories, compare(store, name) if len(rows) > 1 else None,
                 dict(classes or {}))


def write_report(store: Store, study_name: str, target_path: str | Path,
                 png_dir: str | Path | None = None, classes: dict[str, list[str]] | None = None) -> Path:
    """Write the study's report to ``target_path`` (and each figure as a PNG into ``png_dir``);
    ``classes``: each dataset's class names (``mnistlab.api.class_names()``), else labels as numbers."""
    study = load(store, study_name, classes)
    if png_dir is not None and not figures.kaleido_installed():
        raise ReportError(f"--png needs kaleido: {PNG_HINT}")
    page = Page()
    text = render(study, page)
    target = Path(target_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    if png_dir is not None:
        export_png(page.figures, Path(png_dir))
    return target


def render(study: Study, page: Page) -> str:
    sections = [("table", "Comparison", table_section(study)),
                ("differences", "Which differences are real", differences.section(study.differences, page.figure)),
                ("curves", "Training curves", curves_section(study, page)),
                ("overlay", "All models", overlay_section(study, page)),
                ("sweeps", "Sweeps", sweeps_section(study, page)),
                ("weights", "Weights", weights_section(study, page)),
                ("confusion", "Confusion and mistakes", confusion_section(study, page)),
                ("source", "Study file", source_section(study))]
    sections = [s for s in sections if s[2]]
    toc = "".join(f'<li><a href="#{key}">{title}</a></li>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{title}</h2>\n{content}</section>' for key, title, content in sections)
    name = esc(study.record["name"])
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{name} · mnistlab report</title>\n<style>{CSS}</style>\n<script>{HEAD_JS}</script>\n'
            f'<script>{plotly.offline.get_plotlyjs()}</script>\n</head>\n<body><main>\n'
            f'{header(study)}\n<nav class="toc card"><b>Contents</b><ol>{toc}</ol></nav>\n{body}\n'
            f'<footer class="note">Written by mnistlab on {_now()}.</footer></main>\n'
            f'{page.scripts()}\n<script>{TAIL_JS}</script>\n</body></html>\n')


# ---------------------------------------------------------------- header
def header(study: Study) -> str:
    record, runs = study.record, list(study.runs.values())
    facts = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in header_facts(record, runs) if value)
    description = record.get("description") or ""
    return (f'<header class="card"><div class="kicker">mnistlab study report</div><h1>{esc(record["name"])}</h1>'
            + (f'<p class="desc">{esc(description)}</p>' if description.strip() else "")
            + f'<dl class="facts">{facts}</dl></header>')


def header_facts(record: dict[str, Any], runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(term, escaped HTML) pairs for the header's definition list."""
    specs = [r["spec"] for r in runs]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    started = [r["started"] for r in runs if r.get("started")]
    finished = [r["finished"] for r in runs if r.get("finished")]
    seconds = [r["seconds"] for r in runs if r.get("seconds")]
    sizes = _distinct(specs, lambda s: ", ".join(f"{k.split('_')[0]} {s[k]:,}" for k in ("train_size", "test_size")
                                                 if s.get(k)))
    return [("dataset", esc(_distinct(specs, lambda s: s["dataset"])) + (f" ({esc(sizes)})" if sizes else "")),
            ("runs", f"{len(runs)}: " + " ".join(badge(s, f"{n} {s}") for s, n in sorted(counts.items()))),
            ("epochs", esc(_distinct(specs, lambda s: s["epochs"]))),
            ("batch size", esc(_distinct(specs, lambda s: s["batch_size"]))),
            ("optimizer", esc(_distinct(specs, lambda s: s["optimizer"]))),
            ("loss", esc(_distinct(specs, lambda s: s.get("loss", "")))),
            ("validation", esc(_distinct(specs, lambda s: validation_text(s.get("validation", "test"))))),
            ("trained", f"{_time(min(started))} → {_time(max(finished))}" if started and finished else ""),
            ("total training time", duration(sum(seconds), decimals=1) if seconds else ""),
            ("software", esc(_distinct(runs, lambda r: software(r.get("environment") or {})))),
            ("hardware", esc(_distinct(runs, lambda r: hardware(r.get("environment") or {})))),
            ("resumed in another way", esc(_distinct([r for r in runs if (r.get("environment") or {}).get("trained_with")],
                                                     lambda r: r["id"]))),
            ("study file", esc(record.get("path") or ""))]


def _distinct(items: list[Any], key: Callable[[Any], Any], most: int = 4) -> str:
    """The distinct values in order: ``a | b | c``, or the first ``most`` and how many in all."""
    values: list[str] = []
    for item in items:
        value = str(key(item))
        if value and value not in values:
            values.append(value)
    more = f" | … ({len(values)} in all)" if len(values) > most else ""
    return " | ".join(values[:most]) + more


# ---------------------------------------------------------------- table
def table_section(study: Study) -> str:
    rows = study.rows
    if not rows:
        return '<p class="note card">This study has no runs yet.</p>'
    winners = best(rows)
    has_sweep = any(r.sweep for r in rows)
    split = split_header(rows)
    heads = ["model", "parameters", "optimizer"] + (["sweep"] if has_sweep else []) \
        + [label for _, label, _ in METRIC_COLUMNS] + ([split] if split else []) + ["epochs", "seconds", "status"] \
        + (["verdict"] if study.differences else [])
    numeric = {"parameters", "epochs", "seconds", split, *(label for _, label, _ in METRIC_COLUMNS)}
    head = "".join(f'<th scope="col"{" class=num" if h in numeric else ""} title="click to sort">{h}</th>'
                   for h in heads)
    by_label = verdicts(study.differences)
    body = "\n".join(table_row(r, winners, has_sweep, by_label, bool(split)) for r in rows)
    arrows = ", ".join(f"{label} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m, label, _ in METRIC_COLUMNS)
    return (f'<div class="card"><div class="table-wrap"><table class="sortable" id="comparison">'
            f'<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'
            f'<p class="note">Train loss and acc are the last epoch\'s, as Keras reports them (training mode, '
            f'a running mean over the epoch); the eval pass is the trained model evaluated on the training set; '
            f'test figures are the test set after training; validation: {esc(validation_text(rows[0].validation))}. '
            f'Mean ± sample std (n = done runs) over repeats; the best mean per column is '
            f'<span class="best-key">highlighted</span> (better: {arrows}). Click a header to sort.'
            + (' The verdict compares each row\'s test accuracy with the first row\'s: '
               '<a href="#differences">Which differences are real</a>.' if study.differences else '')
            + '</p></div>')


def curve_histories(study: Study, row: Row) -> list[list[dict[str, Any]]]:
    """Histories of the row's done runs; while none is done, of whichever runs have epochs."""
    done = [study.histories[r["id"]] for r in study.row_runs(row, done_only=True)]
    done = [h for h in done if h]
    return done or [h for h in (study.histories[r["id"]] for r in study.row_runs(row)) if h]


def curves_section(study: Study, page: Page) -> str:
    cards = []
    for i, row in enumerate(study.rows):
        histories = curve_histories(study, row)
        status = "" if row.status == "done" else f'<p class="note">{badge(_worst(row.statuses), row.status)}</p>'
        validation = "test set" if row.validation == "test" else \
            f"last {row.validation * 100:g}% of the training images" if isinstance(row.validation, float) else ""
        body = page.figure(f"curves-{slug(row.label)}", figures.curves(esc(row.label), histories, validation)) \
            if histories else f'<h3>{esc(row.label)}</h3><p class="note">No epochs recorded yet.</p>'
        cards.append(f'<div class="card" id="row-{i}">{status}{body}{_stops(study, row)}</div>')
    return "\n".join(cards)


def _stops(study: Study, row: Row) -> str:
    """Where callbacks ended the row's runs, and whose weights its final figures are."""
    notes = []
    for run in study.row_runs(row, done_only=True):
        ending = (run.get("environment") or {}).get("early_stopping")
        if ending:
            stop = f"stopped after epoch {ending['stopped_epoch']} ({ending['reason']})" if ending["stopped_epoch"] else ""
            kept = f"final figures from the weights of epoch {ending['restored_epoch']}" if ending["restored_epoch"] else ""
            notes.append(f"<li>run {esc(run['id'][:8])}: {esc('; '.join(filter(None, (stop, kept))))}</li>")
    return f'<ul class="note stops">{"".join(notes)}</ul>' if notes else ""


def overlay_section(study: Study, page: Page) -> str:
    series = [(esc(row.label), curve_histories(study, row)) for row in study.rows]
    series = [(label, h) for label, h in series if h]
    if len(series) < 2:
        return ""
    return f'<div class="card">{page.figure("overlay", figures.overlay(series))}</div>'


def sweeps_section(study: Study, page: Page) -> str:
    keys = sorted({k for row in study.rows for k in row.sweep})
    cards = [f'<div class="card">{page.figure(f"sweep-{slug(key)}", figures.sweep(key, study.rows, esc))}</div>'
             for key in keys]
    return "\n".join(cards)


def weights_section(study: Study, page: Page) -> str:
    cards = []
    for row in study.rows:
        found, damaged = None, [r for r in study.row_runs(row) if r["status"] == "damaged"]
        for run in study.row_runs(row, done_only=True):
            try:
                if arrays := study.store.load_arrays(run["id"], "weights"):
                    found = (run, arrays)
                    break
            except DamagedArtifact as exc:  # changed since the runs were read: that run only
                damaged.append(dict(run, damage=str(exc)))
        notes = "".join(f'<p class="note damaged">{esc(row.label)}: run {esc(r["id"])} is damaged ({esc(r["damage"])}): '
                        "its weights are not drawn; <code>mnistlab run --retry-failed</code> trains it again.</p>"
                        for r in damaged)
        layers = kernels(found[1][0]) if found else {}
        if layers:
            note = f'<p class="note">Run {esc(found[0]["id"])} (repeat {found[0]["repeat"]}); at most ' \
                   f'{figures.MAX_VIOLIN_POINTS:,} weights per layer drawn, sampled with a fixed seed.</p>'
            notes = page.figure(f"weights-{slug(row.label)}", figures.violins(esc(row.label), layers)) + note + notes
        cards += [f'<div class="card">{notes}</div>'] if notes else []
    return "\n".join(cards) or '<p class="note card">No stored weights (no run is done yet).</p>'


def confusion_section(study: Study, page: Page) -> str:
    images = ImageCache()
    cards = []
    for row in study.rows:
        done = study.row_runs(row, done_only=True)
        train, test = (figures.summed([study.store.load_json(r["id"], f"confusion_{kind}") for r in done])
                       for kind in ("train", "test"))
        if not (train[1] or test[1]):
            continue
        n = max(train[1], test[1])
        counted = f"summed over {n} done runs" if n > 1 else "of one run"
        classes = study.classes.get(done[0]["spec"]["dataset"]) if done else None
        fig = figures.confusion(esc(row.label), train[0], test[0], classes)
        cards.append(f'<div class="card">{page.figure(f"confusion-{slug(row.label)}", fig)}'
                     f'<p class="note">Counts {counted}, each row divided by its total.</p>'
                     f'{_mistakes(study, done, images)}</div>')
    return "\n".join(cards)


def _mistakes(study: Study, done: list[dict[str, Any]], images: ImageCache) -> str:
    """The first done run's misclassified test images, or a note where the images are not cached."""
    for run in done:
        mistakes = study.store.load_json(run["id"], "mistakes")
        if mistakes:
            dataset = run["spec"]["dataset"]
            return figures.mistakes_grid(mistakes, images.get(dataset), images.path(dataset),
                                         study.classes.get(dataset))
    return ""



def source_section(study: Study) -> str:
    source = study.record.get("source")
    return (f'<details class="card"><summary>The study file as it was last run</summary>'
            f'<pre>{esc(source)}</pre></details>') if source else ""


def export_png(figs: list[tuple[str, go.Figure]], directory: Path) -> list[Path]:
    try:
        return figures.write_pngs(figs, directory)
    except Exception as exc:  # noqa: BLE001 -- kaleido and Chromium fail in many ways; say which
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ReportError(f"PNG export failed ({type(exc).__name__}: {first}); {PNG_HINT}") from None


# ---------------------------------------------------------------- small helpers
def _worst(statuses: dict[str, int]) -> str:
    worst_first = ("failed", "damaged", "diverged", "interrupted", "running", "pending")
    return next((s for s in worst_first if s in statuses), "done")


def _time(value: dt.datetime | str) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, dt.datetime) else esc(value)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
