"""The comparison table: one row per model and grid point, repeats grouped as mean ± std (n).

The terminal, Markdown, CSV, JSON and HTML views all call :func:`comparison`; only formatting
differs between them. The train columns are what Keras reports and the seed notebooks tabulate:
the last epoch's ``history`` (training mode, a running mean over the epoch's batches). The
evaluation pass over the training set after training is ``train_loss_eval`` / ``train_accuracy_eval``
(JSON, CSV and the report). Runs trained with different engine-numerics versions
(``mnistlab.numerics``) are never pooled: such a configuration gets one row per version; nor are runs
trained in different precisions (``m (bf16)``, ``m (fp32)``). The test
columns are always the test set after training; with a validation split (``validation = 0.1``) the
table adds the last epoch's ``val acc``, measured on the held-out training images. A run a callback
stopped early shows it in its status: ``done (stopped at 7)``.

>>> rows = comparison(store, "quick")
>>> print(render(rows, "markdown"))
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from .. import numerics
from ..numerics import NUMERICS
from ..store import Store, shown_status
from .stats import Stat, summarize

COLUMNS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")  # the table's figures
METRICS = COLUMNS + ("train_loss_eval", "train_accuracy_eval")  # ... and the evaluation pass, in JSON and CSV
VALIDATION = ("val_loss", "val_accuracy")  # the last epoch's: the table shows them for a validation split
HIGHER_IS_BETTER = {"train_accuracy": True, "test_accuracy": True, "train_loss": False,
                    "test_loss": False, "seconds": False, "train_loss_eval": False, "train_accuracy_eval": True}


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
    numerics: int = NUMERICS  # the engine-numerics version its runs were trained with
    validation: Any = "test"  # "test", "none" or the held-out fraction of the training images
    stopped: list[int] = field(default_factory=list)  # epochs at which callbacks stopped done runs
    variant: str = ""  # " (bf16)", " (numerics 1)": how its runs trained, where the model's runs differ

    @property
    def status(self) -> str:
        """``done``, or what is not: ``2 done, 1 diverged``."""
        if set(self.statuses) == {"done"}:
            return "done"
        return ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))

    @property
    def status_text(self) -> str:
        """The status with early stops: ``done (stopped at 7)``, ``done (2 of 3 stopped, at 7, 9)``."""
        if not self.stopped:
            return self.status
        at = ", ".join(map(str, self.stopped))
        done = self.statuses.get("done", 0)
        return f"{self.status} ({f'stopped at {at}' if done == 1 else f'{len(self.stopped)} of {done} stopped, at {at}'})"


def validation_text(value: Any) -> str:
    """Where a run's ``val_*`` figures come from, in words."""
    if value == "none":
        return "none"
    if value == "test":
        return "the test set, after each epoch"
    return (f"the last {value * 100:g}% of the training images, held out before shuffling; "
            "the test set scored once, after training")


def split_header(rows: list[Row]) -> str | None:
    """``val acc (10% split)`` when the rows validate on a split of the training images."""
    split = next((r.validation for r in rows if isinstance(r.validation, float)), None)
    return f"val acc ({split * 100:g}% split)" if split is not None else None


def comparison(store: Store, study: str) -> list[Row]:
    """Group a study's runs by model and grid point (repeats together), in study order; runs of
    different engine-numerics versions apart, the older labelled with their version, and runs
    trained in different precisions apart, each labelled with its precision (bf16 and fp32 runs
    share an id, so a study continued with ``--precision bf16`` would otherwise pool them)."""
    runs = as_reported(store, store.runs(study=study))
    trained: dict[str, set[str]] = {}  # label -> the precisions its runs trained in
    for run in runs:
        if precision := precision_of(run):
            trained.setdefault(_label(run), set()).add(precision)
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        label = _label(run)
        precision = precision_of(run) or min(trained.get(label, {""}))  # one not trained yet: with the others
        groups.setdefault((label, version_of(run), precision), []).append(run)
    versions: dict[str, set[int]] = {}
    for label, version, _ in groups:
        versions.setdefault(label, set()).add(version)
    return [_row(label, runs, version, (f" (numerics {version})" if len(versions[label]) > 1 and version != NUMERICS
                                        else "") + (f" ({precision})" if len(trained.get(label, ())) > 1 else ""))
            for (label, version, precision), runs in groups.items()]


def _label(run: dict[str, Any]) -> str:
    return f"{run['model']} [{run['point']}]" if run["point"] else run["model"]


def precision_of(run: dict[str, Any]) -> str:
    """The precision a run trained in ("fp32", "bf16"), from its environment; "" before it trained."""
    env = run.get("environment") or {}
    return env.get("precision", "fp32") if env else ""


def as_reported(store: Store, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The store's runs with the metrics named as tables, ``compare`` and the report name them:
    ``train_loss`` / ``train_accuracy`` are the last epoch's, as Keras' history reports them (the
    store's own columns hold the evaluation pass after training: ``train_loss_eval`` /
    ``train_accuracy_eval``), ``val_loss`` / ``val_accuracy`` the last epoch's validation."""
    last = {i: h[-1] for i, h in store.histories([r["id"] for r in runs if r["status"] == "done"]).items() if h}
    out = []
    for run in runs:
        final = last.get(run["id"], {})
        out.append(dict(run, train_loss_eval=run["train_loss"], train_accuracy_eval=run["train_accuracy"],
                        train_loss=final.get("loss"), train_accuracy=final.get("accuracy"),
                        val_loss=final.get("val_loss"), val_accuracy=final.get("val_accuracy")))
    return out


def version_of(run: dict[str, Any]) -> int:
    """The numerics version a run was trained with; a run not trained yet will train with this one's."""
    return numerics.of(run["environment"]) if run.get("environment") else NUMERICS


def _row(label: str, runs: list[dict[str, Any]], version: int = NUMERICS, variant: str = "") -> Row:
    first = runs[0]
    spec = first["spec"]
    done = [r for r in runs if r["status"] == "done"]
    statuses: dict[str, int] = {}
    for r in runs:
        status = shown_status(r)  # "interrupted": left running by a process that is gone
        statuses[status] = statuses.get(status, 0) + 1
    return Row(label=label + variant, variant=variant, model=first["model"], point=first["point"] or "",
               sweep=spec.get("sweep", {}), params=next((r["params"] for r in runs if r["params"]), None), optimizer=spec["optimizer"],
               epochs=spec["epochs"], batch_size=spec["batch_size"],
               stats={m: summarize(r[m] for r in done) for m in METRICS + VALIDATION},
               statuses=statuses, run_ids=[r["id"] for r in runs], numerics=version,
               validation=spec.get("validation", "test"), stopped=sorted(s for r in done if (s := stopped_at(r))))


def stopped_at(run: dict[str, Any]) -> int | None:
    """The epoch a callback stopped a run at (recorded in its environment), or None."""
    return ((run.get("environment") or {}).get("early_stopping") or {}).get("stopped_epoch")


def best(rows: list[Row]) -> dict[str, str]:
    """The label of the best row per metric (by mean), for highlighting."""
    out = {}
    for metric in COLUMNS:
        scored = [(r.stats[metric].mean, r.label) for r in rows if r.stats[metric].n]
        if scored:
            out[metric] = (max if HIGHER_IS_BETTER[metric] else min)(scored)[1]
    return out


HEADERS = ["model", "params", "train loss", "train acc", "test loss", "test acc", "seconds", "status"]


def headers(rows: list[Row]) -> list[str]:
    """:data:`HEADERS`, with the split's ``val acc`` after ``test acc`` when the rows have one."""
    split = split_header(rows)
    return HEADERS[:6] + ([split] if split else []) + HEADERS[6:]


def text_cells(row: Row) -> list[str]:
    stat = row.stats
    split = [stat["val_accuracy"].text(4)] if isinstance(row.validation, float) else []
    return [row.label, f"{row.params:,}" if row.params else "—", stat["train_loss"].text(4),
            stat["train_accuracy"].text(4), stat["test_loss"].text(4), stat["test_accuracy"].text(4),
            *split, stat["seconds"].text(1), row.status_text]


def render(rows: list[Row], fmt: str = "markdown") -> str:
    """``markdown``, ``csv`` or ``json`` text of the table (the terminal view is the CLI's rich table)."""
    if fmt == "markdown":
        heads = headers(rows)
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
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
            writer.writerow([r.model, r.point, r.params, r.optimizer, r.epochs, r.batch_size, r.status_text, *values])
        return out.getvalue()
    raise ValueError(f"unknown table format {fmt!r}; use text, markdown, csv or json")


def to_json(row: Row) -> dict[str, Any]:
    return {"model": row.model, "point": row.point, "sweep": row.sweep, "params": row.params,
            "optimizer": row.optimizer, "epochs": row.epochs, "batch_size": row.batch_size,
            "status": row.status, "runs": row.run_ids, "numerics": row.numerics,
            "validation": row.validation, "stopped_at": row.stopped,
            **{m: row.stats[m].to_json() for m in METRICS + (VALIDATION if isinstance(row.validation, float) else ())}}
