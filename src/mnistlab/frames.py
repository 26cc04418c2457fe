"""A study's runs, histories and comparison table as pandas DataFrames (imported only when asked for).

>>> runs_frame(store.runs(study="quick")).groupby("model")["test_accuracy"].mean()
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd

from .report.table import METRICS, Row

# a run's own columns, then its grid values, then its metrics, then the rest of its spec
IDENTITY = ("id", "study", "model", "point", "label", "repeat")
RESULTS = ("status", "test_accuracy", "test_loss", "train_accuracy", "train_loss", "seconds", "params",
           "trainable", "non_trainable", "epochs_done", "error", "started", "finished")
SPEC = ("dataset", "epochs", "batch_size", "optimizer", "loss", "validation", "train_size", "test_size",
        "seed", "layers")
HISTORY = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def label(run: dict[str, Any]) -> str:
    """``model [grid point]``, as the tables name a run's configuration."""
    return f"{run['model']} [{run['point']}]" if run["point"] else run["model"]


def sweep_columns(sweeps: list[dict[str, Any]]) -> dict[str, str]:
    """Sweep key -> its column: the key as written (``units``, ``optimizer.learning_rate``), or
    ``sweep.KEY`` where it would clash with a run column (``epochs``)."""
    taken = set(IDENTITY) | set(RESULTS) | set(SPEC)
    keys = dict.fromkeys(key for sweep in sweeps for key in sweep)
    return {key: f"sweep.{key}" if key in taken else key for key in keys}


def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, in study order; ``layers`` is a tuple of layer call texts."""
    columns = sweep_columns([r["spec"].get("sweep", {}) for r in runs])
    records = []
    for run in runs:
        spec, sweep = run["spec"], run["spec"].get("sweep", {})
        record = {name: run.get(name) for name in IDENTITY if name != "label"}
        record["label"] = label(run)
        record.update({column: sweep.get(key) for key, column in columns.items()})
        record.update({name: run.get(name) for name in RESULTS})
        record.update({name: spec.get(name) for name in SPEC})
        record["layers"] = tuple(spec["layers"])
        records.append(record)
    return pd.DataFrame.from_records(records, columns=[*IDENTITY, *columns.values(), *RESULTS, *SPEC])


def history_frame(runs: list[dict[str, Any]], histories: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per run and epoch, runs in study order; join with :func:`runs_frame` on ``id``."""
    records = [{"id": run["id"], "model": run["model"], "label": label(run), "repeat": run["repeat"],
                **{name: epoch.get(name) for name in HISTORY}}
               for run in runs for epoch in histories.get(run["id"], [])]
    return pd.DataFrame.from_records(records, columns=["id", "model", "label", "repeat", *HISTORY])


class ComparisonTable(pd.DataFrame):
    """The comparison table as a DataFrame; a notebook shows it as the HTML report's table.

    Derived frames (``table.sort_values(...)``) are plain DataFrames: the HTML is of the table as read.
    """

    _metadata = ["html"]

    @property
    def _constructor(self):
        return pd.DataFrame

    def _repr_html_(self) -> str:
        return self.html


def table_frame(rows: list[Row], html: str) -> ComparisonTable:
    """One row per configuration; per metric its mean (the metric's name), ``_std``, ``_ci95_low/high``."""
    columns = sweep_columns([r.sweep for r in rows])
    records = []
    for row in rows:
        record = {"label": row.label, "model": row.model, "point": row.point,
                  **{column: row.sweep.get(key) for key, column in columns.items()},
                  "params": row.params, "optimizer": row.optimizer, "epochs": row.epochs,
                  "batch_size": row.batch_size, "status": row.status, "runs": len(row.run_ids),
                  "done": row.statuses.get("done", 0)}
        for metric in METRICS:
            stat = row.stats[metric].to_json()
            values = (stat["mean"], stat["std"], stat["ci95_low"], stat["ci95_high"])  # None: one run, no spread
            record.update(zip((metric, f"{metric}_std", f"{metric}_ci95_low", f"{metric}_ci95_high"),
                              (math.nan if v is None else v for v in values)))
        records.append(record)
    table = ComparisonTable(pd.DataFrame.from_records(records))
    table.html = html
    return table


def to_frame(value: Any) -> pd.DataFrame:
    """A DataFrame from what a statistics function returns: a DataFrame, or a list of dicts or dataclasses."""
    if isinstance(value, pd.DataFrame):
        return value
    rows = getattr(value, "rows", value)
    return pd.DataFrame.from_records([dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r)
                                      for r in rows])
