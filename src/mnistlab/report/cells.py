"""The cells of the report's comparison table: escaped text, sortable numbers with their spread,
status badges and the verdict column."""

from __future__ import annotations

import html
import re
from typing import Any

from . import figures
from .compare import Result
from .table import Row

METRIC_COLUMNS = [("train_loss", "train loss", 4), ("train_accuracy", "train acc", 4),
                  ("test_loss", "test loss", 4), ("test_accuracy", "test acc", 4),
                  ("train_loss_eval", "train loss (eval pass)", 4), ("train_accuracy_eval", "train acc (eval pass)", 4)]


def esc(value: Any) -> str:
    return html.escape(str(value))




def verdicts(result: Result | None) -> dict[str, tuple[str, str]] | None:
    """Label -> (verdict, its sentence) for the table's verdict column; None without comparisons."""
    if result is None:
        return None
    return {result.baseline: ("baseline", "the baseline of the comparisons")} | {
        c.label: (c.verdict, c.text) for c in result.comparisons}


def table_row(row: Row, winners: dict[str, str], has_sweep: bool,
               verdicts: dict[str, tuple[str, str]] | None = None, split: bool = False) -> str:
    cells = [cell(row.model, classes="model"),
             cell(f"{row.params:,}" if row.params else "—", row.params or "", "num"), breakable(row.optimizer)]
    if has_sweep:
        cells.append(breakable(figures.sweep_text(row.sweep), after=",="))
    for metric, _, digits in [*METRIC_COLUMNS, *([("val_accuracy", "", 4)] if split else [])]:
        cells.append(metric_cell(row, metric, digits, winners))
    cells.append(cell(str(row.epochs), row.epochs, "num"))
    cells.append(metric_cell(row, "seconds", 1, winners))
    badges = "".join(badge(s, s if len(row.statuses) == 1 and n == 1 else f"{n} {s}")
                     for s, n in sorted(row.statuses.items()))
    stops = row.status_text[len(row.status):].strip()  # "(stopped at 7)"
    cells.append(f'<td data-sort="{esc(row.status_text)}">{badges}{f" {esc(stops)}" if stops else ""}</td>')
    if verdicts is not None:
        verdict, sentence = verdicts.get(row.label, ("", ""))
        cells.append(f'<td class="verdict" title="{esc(sentence)}">{esc(verdict)}</td>')
    mark = "" if row.status == "done" else ' class="incomplete"'
    return f'<tr{mark} data-label="{esc(row.label)}">{"".join(cells)}</tr>'


def metric_cell(row: Row, metric: str, digits: int, winners: dict[str, str]) -> str:
    stat = row.stats[metric]
    classes = "num best" if winners.get(metric) == row.label else "num"
    tip = f" title=\"95% CI {stat.ci95[0]:.{digits + 1}f} – {stat.ci95[1]:.{digits + 1}f}\"" if stat.ci95 else ""
    sort = repr(stat.mean) if stat.n else ""
    mean, _, spread = stat.text(digits).partition(" ")  # the spread on a second line keeps the table narrow
    text = esc(mean) + (f' <span class="spread">{esc(spread)}</span>' if spread else "")
    return f'<td class="{classes}" data-metric="{metric}" data-sort="{sort}"{tip}>{text}</td>'


def cell(text: str, sort: Any = None, classes: str = "") -> str:
    attrs = (f' class="{classes}"' if classes else "") + (f' data-sort="{sort}"' if sort is not None else "")
    return f"<td{attrs}>{esc(text)}</td>"


def breakable(text: str, after: str = "(,") -> str:
    """A cell whose text may wrap only after these characters (``adam(`` / ``learning_rate=0.01)``)."""
    return "<td>" + re.sub(f"([{re.escape(after)}])", r"\1<wbr>", esc(text)) + "</td>"


def badge(status: str, text: str) -> str:
    return f'<span class="badge s-{esc(status)}">{esc(text)}</span>'


# ---------------------------------------------------------------- figures
