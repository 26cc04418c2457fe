"""A study's results where users work: pandas DataFrames, the comparison table and the report shown
inline in Jupyter, and a notebook progress bar for ``mnistlab.run``. Never imports torch; pandas only
when a DataFrame is asked for (``pip install 'mnistlab[notebook]'``).

>>> results = mnistlab.run(study)              # or mnistlab.results("studies/quick.toml") to open, not run
>>> results.runs()                             # one row per run: spec, sweep values, status, metrics
>>> results.history()                          # one row per run and epoch
>>> results.table()                            # the comparison table; in a notebook, the report's table
>>> results.report()                           # writes the HTML report and shows it inline
"""

from __future__ import annotations

import html
import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MnistlabError, StoreError
from .spec import Study, load_study
from .store import Store

OUTCOME_FIELDS = ("trained", "resumed", "skipped", "diverged", "failed", "resubmitted")


def open_store(store: Store | str | None, study_path: str | Path | None) -> Store:
    """The store a study uses: ``store`` as given (a Store, URL or file), else ``mnistlab.db`` beside the
    study file, else ``./mnistlab.db``."""
    if isinstance(store, Store):
        return store
    return Store.for_study(study_path, store) if study_path else Store(store or "mnistlab.db")


@dataclass(repr=False)
class Results:
    """What a ``mnistlab.run`` call did (run ids by fate, as ``Outcome`` has them) and the study's results.

    >>> results = mnistlab.results("studies/quick.toml")
    >>> results.runs().groupby("model")["test_accuracy"].mean()
    """

    store: Store
    study: str  # the study's name in the store
    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # done already, or another process has it
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)  # Ray: its worker died; continued from its checkpoint

    @classmethod
    def of(cls, outcome: Any, store: Store, study: str) -> "Results":
        """The results of a study, with what one run call (its ``Outcome``) did."""
        return cls(store, study, **{name: list(getattr(outcome, name)) for name in OUTCOME_FIELDS})

    def __repr__(self) -> str:
        did = ", ".join(f"{name} {len(getattr(self, name))}" for name in OUTCOME_FIELDS)
        return f"<Results of study {self.study!r}: {did}; store {self.store.url}>"

    def runs(self):
        """One row per run (study order): id, model, grid point and its values, status, metrics, spec."""
        return _frames().runs_frame(self.store.runs(study=self.study))

    def history(self):
        """One row per run and epoch: loss, accuracy, val_loss, val_accuracy, seconds."""
        runs = self.store.runs(study=self.study)
        return _frames().history_frame(runs, self.store.histories(r["id"] for r in runs))

    def table(self):
        """The comparison table (repeats as mean, std and 95% CI per metric) as a DataFrame whose
        notebook view is the HTML report's table."""
        from .report.table import comparison
        rows = comparison(self.store, self.study)
        return _frames().table_frame(rows, table_html(rows))

    def report(self, path: str | Path | None = None) -> "ReportView":
        """Write the HTML report (default ``STUDY-report.html``) and return it; a notebook shows it inline."""
        from .report.figures import slug
        from .report.html import write_report
        target = Path(path) if path is not None else Path(f"{slug(self.study)}-report.html")
        return ReportView(write_report(self.store, self.study, target), self.study)

    def compare(self, baseline: str | None = None, metric: str = "test_accuracy"):
        """Paired statistics of each configuration against ``baseline`` (``mnistlab compare``) as a DataFrame.

        HOOK: this calls ``mnistlab.report.compare.compare``; until that statistics module exists it
        raises a one-line MnistlabError.
        """
        try:
            statistics = importlib.import_module(f"{__package__}.report.compare")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.report.compare":
                raise
            raise MnistlabError("results.compare() needs the statistics module (mnistlab.report.compare), "
                                "which this mnistlab does not have; results.table() gives mean, std and CI") from None
        return _frames().to_frame(statistics.compare(self.store, self.study, baseline=baseline, metric=metric))


def open_results(study: Study | str | Path, store: Store | str | None = None) -> Results:
    """The results of a study already in the store, without running anything.

    ``study`` is a Study, a study file (its ``name`` is read; the store defaults to the one beside it)
    or a study name in the store.

    >>> mnistlab.results("studies/quick.toml").table()
    >>> mnistlab.results("quick", store="studies/mnistlab.db").history()
    """
    path = None
    if isinstance(study, Study):
        name, path = study.name, study.path
    elif str(study).endswith(".toml"):
        loaded = load_study(study)
        name, path = loaded.name, loaded.path
    else:
        name = str(study)
    db = open_store(store, path)
    if db.study(name) is None:
        known = ", ".join(repr(s["name"]) for s in db.studies()[:8]) or "none"
        raise StoreError(f"study {name!r} is not in the store {db.url} (studies there: {known}); "
                         "run it first with mnistlab.run(study)")
    return Results(db, name)


def _frames():
    """The pandas module of this package, or a one-line error saying how to get pandas."""
    try:
        from . import frames
    except ModuleNotFoundError as exc:
        if exc.name != "pandas":
            raise
        raise MnistlabError("results as DataFrames need pandas: pip install 'mnistlab[notebook]'") from None
    return frames


# ---------------------------------------------------------------- what a notebook displays
def table_html(rows: list) -> str:
    """The report's comparison table (same cells, same escaping), styled by the report's CSS scoped to it."""
    from .report import html as report
    section = report.table_section(report.Study(store=None, record={}, rows=rows, runs={}, histories={}))
    return f'<div class="mnistlab-table"><style>{scoped_css(report.CSS, ".mnistlab-table")}</style>{section}</div>'


def scoped_css(css: str, scope: str) -> str:
    """Every rule of ``css`` applied only inside ``scope``, so a notebook page keeps its own look."""
    def prefix(match: re.Match) -> str:
        selectors = [s.strip() for s in match.group(1).split(",")]
        return ",".join(scope if s == ":root" else f"{scope} {s}" for s in selectors) + "{"
    return re.sub(r"([^{}]+)\{", prefix, css.strip())


class ReportView(os.PathLike):
    """A written report: a path (``open(view)`` works) that a notebook shows inline in an iframe."""

    def __init__(self, path: str | Path, study: str = "", height: int = 720):
        self.path, self.study, self.height = Path(path), study, height

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<mnistlab report {str(self.path)!r}>"

    def _repr_html_(self) -> str:
        page = html.escape(self.path.read_text(encoding="utf-8"), quote=True)  # the whole page, as an attribute
        title = html.escape(f"mnistlab report: {self.study}", quote=True)
        return (f'<iframe srcdoc="{page}" title="{title}" style="width:100%;height:{self.height}px;'
                f'border:1px solid #e4e7ec;border-radius:6px"></iframe>'
                f'<div style="font-size:12px;color:#667085">written to {html.escape(str(self.path))}</div>')


# ---------------------------------------------------------------- progress under Jupyter
def in_notebook() -> bool:
    """True inside a Jupyter kernel (not plain Python, not the IPython terminal)."""
    ipython = sys.modules.get("IPython")  # never imported just to ask
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class NotebookProgress:
    """The runner's Reporter as tqdm bars (widgets in Jupyter): the study's runs, the current run's batches.

    Without tqdm it stays silent, as plain Python does.
    """

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self.tqdm, self.runs, self.batches, self.label = tqdm, None, None, ""

    def study_started(self, total: int, done: int) -> None:
        if self.tqdm:
            self.runs = self.tqdm(total=total, initial=done, desc="runs", unit="run")

    def run_started(self, specs, resumed_from: int) -> None:
        spec = specs[0]
        self.label = spec.label + (f" r{spec.repeat}" if len(specs) == 1 else f" +{len(specs) - 1} grouped")
        if self.tqdm:
            if self.batches is None:
                self.batches = self.tqdm(total=1, desc=self.label, unit="batch", leave=False)
            self.batches.reset(total=1)
            self.batches.set_description(f"{self.label} epoch {resumed_from + 1}/{spec.epochs}", refresh=False)

    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None:
        if self.batches is not None:
            if batch < self.batches.n or self.batches.total != batches:  # a new epoch
                self.batches.reset(total=batches)
            self.batches.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.4f}", refresh=False)
            self.batches.update(batch - self.batches.n)

    def epoch(self, spec, row: dict[str, float]) -> None:
        if self.batches is not None and row["epoch"] < spec.epochs:
            self.batches.set_description(f"{self.label} epoch {row['epoch'] + 1}/{spec.epochs}", refresh=False)

    def run_finished(self, spec, status: str, detail: str) -> None:
        if self.runs is not None:
            self.runs.update(1)
            if status != "done":
                self.runs.write(f"{status} {spec.label}: {detail}")

    def close(self) -> None:
        for bar in (self.batches, self.runs):
            if bar is not None:
                bar.close()
