"""The comparison table: one row per model and grid point, repeats grouped as mean ± std (n).

The terminal, Markdown, CSV, JSON and HTML views all call :func:`comparison`; only formatting
differs between them.

>>> rows = comparison(store, "quick")
>>> print(render(rows, "markdown"))
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..store import Store
from .stats import Stat, summarize

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")
HIGHER_IS_BETTER = {"train_accuracy": True, "test_accuracy": True, "train_loss": False,
                    "test_loss": False, "seconds": False}


@dataclass
class Row:
    label: str  # model [grid point]
    model: str
    point: str
    sweep: dict[str, Any]
    params: int | None
    optimizer: str
    epochs: int
    batch_size: int
    stats: dict[str, Stat]
    statuses: dict[str, int]  # status -> count over the row's runs
    run_ids: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``done``, or what is not: ``2 done, 1 diverged``."""
        if set(self.statuses) == {"done"}:
            return "done"
        return ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))


def comparison(store: Store, study: str) -> list[Row]:
    """Group a study's runs by model and grid point (repeats together), in study order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in store.runs(study=study):
        label = f"{run['model']} [{run['point']}]" if run["point"] else run["model"]
        groups.setdefault(label, []).append(run)
    return [_row(label, runs) for label, runs in groups.items()]


def _row(label: str, runs: list[dict[str, Any]]) -> Row:
    first = runs[0]
    spec = first["spec"]
    done = [r for r in runs if r["status"] == "done"]
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return Row(label=label, model=first["model"], point=first["point"] or "", sweep=spec.get("sweep", {}),
               params=next((r["params"] for r in runs if r["params"]), None), optimizer=spec["optimizer"],
               epochs=spec["epochs"], batch_size=spec["batch_size"],
               stats={m: summarize(r[m] for r in done) for m in METRICS},
               statuses=statuses, run_ids=[r["id"] for r in runs])


def best(rows: list[Row]) -> dict[str, str]:
    """The label of the best row per metric (by mean), for highlighting."""
    out = {}
    for metric in METRICS:
        scored = [(r.stats[metric].mean, r.label) for r in rows if r.stats[metric].n]
        if scored:
            out[metric] = (max if HIGHER_IS_BETTER[metric] else min)(scored)[1]
    return out


HEADERS = ["model", "params", "train loss", "train acc", "test loss", "test acc", "seconds", "status"]


def text_cells(row: Row) -> list[str]:
    stat = row.stats
    return [row.label, f"{row.params:,}" if row.params else "—", stat["train_loss"].text(4),
            stat["train_accuracy"].text(4), stat["test_loss"].text(4), stat["test_accuracy"].text(4),
            stat["seconds"].text(1), row.status]


def render(rows: list[Row], fmt: str = "markdown") -> str:
    """``markdown``, ``csv`` or ``json`` text of the table (the terminal view is the CLI's rich table)."""
    if fmt == "markdown":
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(text_cells(r)) + " |" for r in rows]
        return "\n".join(lines)
    if fmt == "json":
        return json.dumps([to_json(r) for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        columns = [f"{m}_{k}" for m in METRICS for k in ("mean", "std", "n", "ci95_low", "ci95_high")]
        writer.writerow(["model", "point", "params", "optimizer", "epochs", "batch_size", "status", *columns])
        for r in rows:
            values = [v for m in METRICS for v in r.stats[m].to_json().values()]
            writer.writerow([r.model, r.point, r.params, r.optimizer, r.epochs, r.batch_size, r.status, *values])
        return out.getvalue()
    raise ValueError(f"unknown table format {fmt!r}; use text, markdown, csv or json")


def to_json(row: Row) -> dict[str, Any]:
    return {"model": row.model, "point": row.point, "sweep": row.sweep, "params": row.params,
            "optimizer": row.optimizer, "epochs": row.epochs, "batch_size": row.batch_size,
            "status": row.status, "runs": row.run_ids, **{m: row.stats[m].to_json() for m in METRICS}}
