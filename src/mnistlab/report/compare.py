"""Which differences are real: every configuration against a baseline, paired by seed, and the
factor effects of a model's sweep, computed from the store.

Repeat k of every configuration in a study trains from the same seed, so configurations are
compared pair by pair: the mean paired difference with a bootstrap interval, a paired test over the
seeds (exact sign-flip permutation test below 6 pairs, Wilcoxon's signed-rank test from 6), and
McNemar's exact test on the shared test set from the stored predictions. p-values are
Holm-corrected across the comparisons. docs/STATISTICS.md says which test decides when.

>>> result = compare(store, "seed002-tasks-1-2ab", baseline="task 2b: mlp (100), lr sweep [learning_rate=0.1]")
>>> result.comparisons[0].text           # "no difference detected at n=3; about 9 repeats would …"
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ReportError
from ..store import Store
from . import stats
from .table import HIGHER_IS_BETTER, METRICS, Row, as_reported, comparison


@dataclass
class SeedPair:
    """Repeat ``repeat`` of the baseline and of a configuration: same seed, both done."""

    seed: int
    repeat: int
    baseline_run: str
    run: str
    difference: float  # the configuration's metric minus the baseline's
    only_baseline: int | None = None  # test images only the baseline gets right (None: no predictions)
    only_config: int | None = None  # ... only the configuration gets right
    mcnemar_p: float | None = None


@dataclass
class Comparison:
    """One configuration against the baseline; ``verdict`` is better, worse, no difference
    detected, not tested or not compared, and ``text`` says it in words."""

    label: str
    n: int  # seed pairs with both runs done
    mean: float | None  # the configuration's mean over those pairs
    difference: float | None  # mean paired difference, configuration minus baseline
    ci95: tuple[float, float] | None  # percentile bootstrap interval of that mean
    effect_dz: float | None  # Cohen's d_z: mean over standard deviation of the differences
    seed_test: str | None  # the paired test over seeds and its p
    seed_p: float | None
    test: str  # the test that decides: the seed test, or McNemar on the test set
    p: float | None
    p_holm: float | None = None
    repeats_needed: int | None = None
    pairs: list[SeedPair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = "not compared"
    text: str = ""


@dataclass
class Factors:
    """Analysis of variance of one model's sweep: which factor matters."""

    model: str
    factors: list[str]
    n: int  # done runs
    terms: list[stats.Term]
    means: list[dict[str, Any]]  # one per grid point: the factors' levels, mean, std, n


@dataclass
class Result:
    study: str
    metric: str
    baseline: str
    baseline_mean: float | None
    higher_is_better: bool
    comparisons: list[Comparison]
    factors: list[Factors]
    notes: list[str] = field(default_factory=list)


def compare(store: Store, study: str, baseline: str | None = None, metric: str = "test_accuracy",
            alpha: float = stats.ALPHA) -> Result:
    """Every configuration of ``study`` against ``baseline`` (a table label or a model name; default
    the first), by ``metric``, plus the factor effects of each model with a sweep."""
    if metric not in METRICS:
        raise ReportError(f"--metric {metric!r} is unknown; use one of: {', '.join(METRICS)}")
    rows = comparison(store, study)
    if not rows:
        known = ", ".join(repr(s["name"]) for s in store.studies()[:8]) or "none"
        raise ReportError(f"study {study!r} has no runs in {store.url} (studies there: {known}); "
                          "run it first with `mnistlab run STUDY.toml`")
    base = _baseline(rows, baseline)
    runs = {r["id"]: r for r in as_reported(store, store.runs(study=study))}  # the table's train columns
    predictions = _Predictions(store) if metric == "test_accuracy" else None
    found = [_compare(base, row, runs, metric, predictions) for row in rows if row is not base]
    _decide(found, HIGHER_IS_BETTER[metric], alpha)
    base_values = [r[metric] for r in _done(base, runs).values() if r[metric] is not None]
    notes = [predictions.note()] if predictions and predictions.missing else []
    return Result(study, metric, base.label, stats.summarize(base_values).mean if base_values else None,
                  HIGHER_IS_BETTER[metric], found, factor_effects(rows, runs, metric), [n for n in notes if n])


def _baseline(rows: list[Row], wanted: str | None) -> Row:
    if wanted is None:
        return rows[0]
    exact = [r for r in rows if r.label == wanted]
    by_model = [r for r in rows if r.model == wanted]
    if exact or len(by_model) == 1:
        return (exact or by_model)[0]
    if by_model:
        raise ReportError(f"--baseline {wanted!r} has {len(by_model)} configurations; name one: "
                          + "; ".join(repr(r.label) for r in by_model))
    raise ReportError(f"--baseline {wanted!r} is not a model or configuration of the study; use one of: "
                      + "; ".join(repr(r.label) for r in rows))


def _done(row: Row, runs: dict[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The row's done runs by seed."""
    return {runs[i]["spec"]["seed"]: runs[i] for i in row.run_ids if i in runs and runs[i]["status"] == "done"}


class _Predictions:
    """Stored test-set predictions, loaded once per run; remembers the runs that have none."""

    def __init__(self, store: Store):
        self.store, self.cache, self.missing = store, {}, []

    def get(self, run_id: str) -> dict[str, np.ndarray] | None:
        if run_id not in self.cache:
            loaded = self.store.load_arrays(run_id, "predictions")
            self.cache[run_id] = loaded[0] if loaded else None
            if loaded is None:
                self.missing.append(run_id)
        return self.cache[run_id]

    def note(self) -> str:
        ids = ", ".join(i[:8] for i in self.missing[:6]) + (f" and {len(self.missing) - 6} more" if len(self.missing) > 6 else "")
        return (f"no stored test-set predictions for {len(self.missing)} run(s) ({ids}): they were trained "
                "before mnistlab stored them, so McNemar's test on the shared test set leaves them out")


def _compare(base: Row, row: Row, runs: dict, metric: str, predictions: _Predictions | None) -> Comparison:
    ours, theirs = _done(row, runs), _done(base, runs)
    pairs = [SeedPair(seed, ours[seed]["repeat"], theirs[seed]["id"], ours[seed]["id"],
                      ours[seed][metric] - theirs[seed][metric])
             for seed in sorted(ours, key=lambda s: ours[s]["repeat"]) if seed in theirs
             and ours[seed][metric] is not None and theirs[seed][metric] is not None]
    notes = []
    unpaired = len(row.run_ids) - len(pairs)
    if unpaired:
        notes.append(f"{unpaired} of its {len(row.run_ids)} runs have no done run of the baseline with the same "
                     "seed (or are not done themselves): left out")
    diffs = [p.difference for p in pairs]
    seed_test, seed_p = stats.paired_test(diffs) if len(pairs) >= 2 else (None, None)
    found = Comparison(row.label, len(pairs), _mean([ours[p.seed][metric] for p in pairs]), _mean(diffs),
                       stats.bootstrap_ci(diffs), stats.cohens_dz(diffs), seed_test, seed_p,
                       seed_test or "none", seed_p, pairs=pairs, notes=notes)
    if predictions is not None and pairs:
        _mcnemar(found, predictions)
    return found


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _mcnemar(found: Comparison, predictions: _Predictions) -> None:
    """McNemar's exact test on the shared test set, in every seed pair that has predictions."""
    for pair in found.pairs:
        a, b = predictions.get(pair.baseline_run), predictions.get(pair.run)
        if a is None or b is None:
            continue
        if not np.array_equal(a["test_labels"], b["test_labels"]):
            found.notes.append(f"seed {pair.seed}: the two runs were tested on different test sets; no McNemar test")
            continue
        pair.only_baseline, pair.only_config = stats.discordant(a["test_labels"], a["test"], b["test"])
        pair.mcnemar_p = stats.mcnemar_exact(pair.only_baseline, pair.only_config)


def _decide(found: list[Comparison], higher_is_better: bool, alpha: float) -> None:
    """Choose each comparison's test, Holm across the comparisons, then the verdict in words.

    The test over seeds decides once it can reach significance after Holm's correction (from 6 pairs
    for one comparison: its smallest p is 2 / 2^n); until then McNemar's test on the test set in
    every seed pair does, when each pair has predictions."""
    strict = alpha / max(1, sum(c.n > 0 for c in found))  # Holm's first step
    for c in found:
        if c.n and stats.smallest_p(c.n) > strict and all(p.mcnemar_p is not None for p in c.pairs):
            signs = {np.sign(p.only_config - p.only_baseline) for p in c.pairs}
            # intersection-union: "different in every pair, one way" has the largest pair's p
            c.p = max(p.mcnemar_p for p in c.pairs) if len(signs) == 1 and 0 not in signs else 1.0
            c.test = "McNemar exact" + (", every seed pair" if c.n > 1 else "")
    tested = [c for c in found if c.p is not None]
    for c, adjusted in zip(tested, stats.holm([c.p for c in tested])):
        c.p_holm = adjusted
    for c in found:
        diffs = [p.difference for p in c.pairs]
        c.repeats_needed = stats.repeats_needed(diffs, alpha=strict) if c.n >= 2 else None
        c.verdict, c.text = _verdict(c, higher_is_better, alpha)


def _verdict(c: Comparison, higher_is_better: bool, alpha: float) -> tuple[str, str]:
    if c.n == 0:
        return "not compared", "not compared: no seed has a done run of both"
    if c.p_holm is None:
        return "not tested", "not tested: one run each and no stored test-set predictions"
    mcnemar = c.test.startswith("McNemar")
    if c.p_holm < alpha:
        word = "better" if (c.difference > 0) == higher_is_better else "worse"
        where = "" if not mcnemar else " on the test set" + (" (one run each)" if c.n == 1 else
                                                              f" in each of the {c.n} seed pairs")
        return word, word + where
    if c.n == 1:
        return "no difference detected", ("no difference detected on the test set (one run each; "
                                          "repeats would show the spread between seeds)")
    text = f"no difference detected at n={c.n}"
    if c.repeats_needed and c.repeats_needed > c.n:
        text += f"; about {c.repeats_needed} repeats would detect a difference of {abs(c.difference):.4f}"
    elif not c.difference:
        text += " (the mean difference is 0)"
    return "no difference detected", text


def factor_effects(rows: list[Row], runs: dict[str, dict[str, Any]], metric: str) -> list[Factors]:
    """An analysis of variance per model whose sweep has a factor with two or more levels; a model
    whose runs trained in different precisions or engine-numerics versions gets one per variant
    (``sweep (bf16)``), as its table rows: pooled, that difference would read as noise."""
    out = []
    for model, variant in dict.fromkeys((r.model, r.variant) for r in rows):
        mine = [r for r in rows if r.model == model and r.variant == variant and r.sweep]
        keys = sorted({k for r in mine for k in r.sweep})
        if len(mine) < 2 or not keys:
            continue
        values, levels = [], {k: [] for k in keys}
        for row in mine:
            for run in _done(row, runs).values():
                if run[metric] is not None:
                    values.append(run[metric])
                    for k in keys:
                        levels[k].append(row.sweep.get(k))
        terms = stats.anova(values, levels)
        if terms:
            means = [{**row.sweep, **row.stats[metric].to_json()} for row in mine]
            out.append(Factors(model + variant, [k for k in keys if len({repr(v) for v in levels[k]}) > 1], len(values),
                               terms, means))
    return out


def factor_verdict(term: stats.Term, alpha: float = stats.ALPHA) -> str:
    if term.p is None:
        return ""
    return "matters" if term.p < alpha else "no effect detected"


# ---------------------------------------------------------------- the same numbers as text
HEADERS = ["configuration", "n", "mean", "difference [95% CI]", "d_z", "over seeds: test, p",
           "test set: only baseline / only it right", "decided by", "p", "p (Holm)", "verdict"]
FACTOR_HEADERS = ["term", "df", "F", "p", "η²", "verdict"]


def number(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def p_text(p: float | None) -> str:
    return "—" if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}")


def cells(c: Comparison) -> list[str]:
    """One comparison as text cells under :data:`HEADERS`."""
    ci = f" [{number(c.ci95[0], sign=True)}, {number(c.ci95[1], sign=True)}]" if c.ci95 else ""
    seeds = f"{c.seed_test} p {p_text(c.seed_p)}" if c.seed_test else "—"
    counts = [f"{p.only_baseline}/{p.only_config}" for p in c.pairs if p.mcnemar_p is not None]
    shown = " · ".join(counts[:4]) + (" · …" if len(counts) > 4 else "")
    return [c.label, str(c.n), number(c.mean), number(c.difference, sign=True) + ci, number(c.effect_dz, 2),
            seeds, shown or "—", c.test, p_text(c.p), p_text(c.p_holm), c.text]


def text_block(c: Comparison) -> tuple[str, str]:
    """A comparison for a terminal: its numbers on a few lines, and its verdict sentence."""
    label, n, _, difference, dz, seeds, counts, test, p, p_holm, _ = cells(c)
    lines = [f"{label}  n={n}  {difference}  d_z {dz}", f"    over seeds: {seeds}"]
    if counts != "—":
        lines.append(f"    test set, images only the baseline / only it gets right: {counts}")
    lines.append(f"    decided by {test}: p {p}, Holm {p_holm}")
    return "\n".join(lines), c.text


def factor_cells(term: stats.Term) -> list[str]:
    return [term.name, f"{term.df:g}", number(term.f, 2), p_text(term.p), number(term.eta_sq, 3),
            factor_verdict(term)]


def headline(result: Result) -> str:
    """The sentence above the table: metric, baseline, and how the tests were chosen."""
    direction = "higher" if result.higher_is_better else "lower"
    return (f"{result.metric} ({direction} is better), each configuration minus the baseline "
            f"{result.baseline!r} ({number(result.baseline_mean)}), paired by seed; p-values Holm-corrected "
            f"across {sum(c.p is not None for c in result.comparisons)} comparisons")


def render(result: Result, fmt: str = "markdown") -> str:
    """``markdown`` or ``json`` text of a comparison (the terminal view is the CLI's rich table)."""
    if fmt == "json":
        return json.dumps(_plain(dataclasses.asdict(result)), indent=2)
    if fmt != "markdown":
        raise ReportError(f"--format {fmt!r} is unknown; use text, markdown or json")
    lines = [headline(result) + ".", "", _md_table(HEADERS, [cells(c) for c in result.comparisons])]
    lines += [f"- {c.label}: {note}" for c in result.comparisons for note in c.notes]
    lines += [f"- {note}" for note in result.notes]
    for f in result.factors:
        lines += ["", f"Factor effects of {f.model!r} ({f.n} runs):", "",
                  _md_table(FACTOR_HEADERS, [factor_cells(t) for t in f.terms])]
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731 - labels may hold a pipe
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                     + ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows])


def _plain(value: Any) -> Any:
    """JSON-safe: tuples as lists, NaN and infinities as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value
