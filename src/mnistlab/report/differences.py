"""The report's "Which differences are real" section: :func:`.compare.compare` as a forest plot of
the paired differences with their intervals, the comparison table with its verdicts, and each
sweep's factor effects (with the interaction plot for two factors).

Every user-written string (model names, grid points) is escaped here, for HTML and for plotly
alike, as in :mod:`.html`. Never imports torch.

>>> section(result, page.figure)       # HTML; the figures go through the page's collector
"""

from __future__ import annotations

import html
from typing import Any, Callable

import plotly.graph_objects as go

from . import figures
from .compare import (FACTOR_HEADERS, HEADERS, Comparison, Factors, Result, factor_cells, cells, headline,
                      number)

COLOURS = {"better": "#067647", "worse": "#b42318"}  # anything else: grey
GREY = "#667085"
EXPLAIN = ("Repeat k of every configuration trains from the same seed, so each configuration is compared "
           "with the baseline seed by seed. The interval is a 95% percentile bootstrap of the mean paired "
           "difference; d_z is that mean over the differences' standard deviation. The test over seeds is "
           "the exact sign-flip permutation test below 6 pairs and Wilcoxon's signed-rank test from 6; "
           "until it can reach p &lt; 0.05 after Holm's correction, McNemar's exact test on the shared "
           "test set decides, in every seed pair (the counts are the test images only the baseline, and "
           "only the configuration, gets right). p-values are Holm-corrected across the comparisons.")


def esc(value: Any) -> str:
    return html.escape(str(value))


def section(result: Result | None, figure: Callable[[str, go.Figure], str]) -> str:
    """The section's HTML, or "" when there is nothing to compare (one configuration)."""
    if result is None or not result.comparisons:
        return ""
    parts = [f'<div class="card"><p>{esc(headline(result))}.</p>']
    if any(c.difference is not None for c in result.comparisons):
        parts.append(figure("differences", forest(result)))
    parts.append(_table(HEADERS, [cells(c) for c in result.comparisons], [c.verdict for c in result.comparisons]))
    notes = [f"{c.label}: {n}" for c in result.comparisons for n in c.notes] + result.notes
    parts += [f'<p class="note">{esc(n)}</p>' for n in notes]
    parts.append(f'<p class="note">{EXPLAIN}</p></div>')
    for f in result.factors:
        parts.append(_factors(f, result.metric, figure))
    return "\n".join(parts)


def _table(headers: list[str], rows: list[list[str]], verdicts: list[str] | None = None) -> str:
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        tds = "".join(f"<td>{esc(cell)}</td>" for cell in row[:-1])
        verdict = verdicts[i] if verdicts else ""
        style = f' style="color:{COLOURS[verdict]};font-weight:600"' if verdict in COLOURS else ""
        body.append(f'<tr data-verdict="{esc(verdict)}">{tds}<td{style}>{esc(row[-1])}</td></tr>')
    return (f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _factors(f: Factors, metric: str, figure: Callable[[str, go.Figure], str]) -> str:
    terms = [t for t in f.terms if t.p is not None]
    top = max(terms, key=lambda t: t.eta_sq) if terms else None
    summary = (f"{esc(top.name)} matters most (η² = {top.eta_sq:.2f}, p = {top.p:.2g})."
               if top is not None and top.p < 0.05 else "No factor's effect was detected.")
    plot = figure(f"interaction-{figures.slug(f.model)}", interaction(f, metric)) if len(f.factors) == 2 else ""
    return (f'<div class="card"><h3>Factor effects of {esc(f.model)}</h3><p>{summary} Analysis of variance '
            f'over {f.n} runs; η² is each term\'s share of the total sum of squares.</p>'
            f'{_table(FACTOR_HEADERS, [factor_cells(t) for t in f.terms])}{plot}</div>')


def forest(result: Result) -> go.Figure:
    """Each configuration's mean paired difference from the baseline with its 95% interval, coloured
    by verdict, and the line of no difference."""
    shown = [c for c in result.comparisons if c.difference is not None][::-1]  # first on top
    fig = figures._figure()
    for verdict in dict.fromkeys(c.verdict for c in shown):
        group = [c for c in shown if c.verdict == verdict]
        fig.add_trace(go.Scatter(
            x=[c.difference for c in group], y=[esc(c.label) for c in group], mode="markers", name=esc(verdict),
            marker=dict(size=10, color=COLOURS.get(verdict, GREY)),
            error_x=dict(type="data", symmetric=False, visible=True,
                         array=[(c.ci95[1] - c.difference) if c.ci95 else 0.0 for c in group],
                         arrayminus=[(c.difference - c.ci95[0]) if c.ci95 else 0.0 for c in group]),
            customdata=[[c.n, _p(c), esc(c.text)] for c in group],
            hovertemplate="%{y}: %{x:+.4f} (n=%{customdata[0]}, Holm p %{customdata[1]})<br>%{customdata[2]}"
                          "<extra></extra>"))
    fig.add_vline(x=0, line=dict(color="#888", dash="dash"))
    label = result.metric.replace("_", " ")
    fig.update_xaxes(title_text=f"{label}: configuration minus baseline")
    fig.update_yaxes(type="category", automargin=True)
    fig.update_layout(title_text=f"Paired differences from {esc(result.baseline)} (95% bootstrap interval)",
                      height=max(260, 90 + 38 * len(shown)))
    return fig


def _p(c: Comparison) -> str:
    return number(c.p_holm, 4) if c.p_holm is not None else "—"


def interaction(f: Factors, metric: str) -> go.Figure:
    """Mean ``metric`` at each level of the first factor, one line per level of the second (parallel
    lines: no interaction), with the 95% t-interval of each mean."""
    first, second = f.factors
    fig = figures._figure()
    for level in sorted({m[second] for m in f.means}, key=figures._order):
        points = sorted((m for m in f.means if m[second] == level and m["n"]), key=lambda m: figures._order(m[first]))
        fig.add_trace(go.Scatter(
            x=[esc(m[first]) for m in points], y=[m["mean"] for m in points], mode="lines+markers",
            name=esc(f"{second.removeprefix('optimizer.')}={level}"),
            error_y=dict(type="data", symmetric=False, visible=True,
                         array=[(m["ci95_high"] - m["mean"]) if m["ci95_high"] is not None else 0.0 for m in points],
                         arrayminus=[(m["mean"] - m["ci95_low"]) if m["ci95_low"] is not None else 0.0
                                     for m in points])))
    fig.update_xaxes(title_text=esc(first.removeprefix("optimizer.")), type="category")
    fig.update_yaxes(title_text=metric.replace("_", " "))
    fig.update_layout(title_text=f"Interaction of {esc(first)} and {esc(second)}: {esc(f.model)}", height=400)
    return fig
