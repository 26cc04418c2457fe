"""Statistics over repeats, computed in one tested place (seed 002 summed without resetting).

>>> summarize([0.97, 0.98, 0.975])
Stat(mean=0.975, std=0.005, n=3, ci95=(0.9626..., 0.9874...))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import numpy as np

# two-sided 95% Student t critical values by degrees of freedom; beyond 30 the normal 1.96 is close
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample standard deviation (n - 1); None with one value
    n: int
    ci95: tuple[float, float] | None  # t-interval of the mean; None with one value

    def text(self, digits: int = 4) -> str:
        """``0.9812 ± 0.0011 (n=3)``, or the value alone for a single run."""
        if self.n == 0:
            return "—"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n,
                "ci95_low": self.ci95[0] if self.ci95 else None, "ci95_high": self.ci95[1] if self.ci95 else None}


def t95(df: int) -> float:
    return _T95[df - 1] if df <= len(_T95) else 1.96


def summarize(values: Iterable[float | None]) -> Stat:
    """Mean, sample std, n and 95% CI of the finite values (None and NaN are left out)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Stat(math.nan, None, 0, None)
    mean = math.fsum(xs) / n
    if n == 1:
        return Stat(mean, None, 1, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t95(n - 1) * std / math.sqrt(n)
    return Stat(mean, std, n, (mean - half, mean + half))


# ---------------------------------------------------------------- paired comparisons
# scipy and statsmodels take seconds to import on a loaded 2-core machine: imported where used, so
# `mnistlab table` and the report's other sections do not wait for them.
ALPHA = 0.05
WILCOXON_FROM = 6  # pairs; below, the exact sign-flip test (both can reach p < 0.05 only from 6 pairs)
WILCOXON_EFFICIENCY = 3 / math.pi  # Wilcoxon's efficiency against the t-test for normal data (0.955)


def _finite(values: Iterable[float]) -> "np.ndarray":
    import numpy as np
    xs = np.asarray([float(v) for v in values], dtype=float)
    return xs[np.isfinite(xs)]


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (``scipy.stats.bootstrap``); None below 2 values.

    Fixed ``seed``: the same numbers give the same interval. With under about 10 values no interval
    can be wider than their range, so read it beside the test, not instead of it.

    >>> bootstrap_ci([0.012, 0.018, 0.015])
    (0.012, 0.018)
    """
    from scipy import stats
    xs = _finite(values)
    if len(xs) < 2:
        return None
    result = stats.bootstrap((xs,), _mean, confidence_level=confidence, n_resamples=resamples,
                             method="percentile", vectorized=True, rng=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean(x: "np.ndarray", axis: int = -1) -> "np.ndarray":
    return x.mean(axis=axis)


def sign_flip_test(diffs: Iterable[float]) -> float:
    """Exact two-sided p of the mean paired difference: all 2^n sign flips
    (``scipy.stats.permutation_test``, one sample, ``permutation_type='samples'``).

    The smallest p it can give is 2 / 2^n: 0.25 with 3 pairs, 0.0625 with 5.

    >>> sign_flip_test([0.01, 0.02, 0.015])
    0.25
    """
    from scipy import stats
    xs = _finite(diffs)
    if len(xs) == 0 or not xs.any():
        return 1.0
    result = stats.permutation_test((xs,), _mean, permutation_type="samples", n_resamples=math.inf,
                                    vectorized=True, alternative="two-sided")
    return float(min(1.0, result.pvalue))


def wilcoxon_test(diffs: Iterable[float]) -> float:
    """Two-sided p of Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``: exact when it can be)."""
    from scipy import stats
    xs = _finite(diffs)
    if len(xs) == 0 or not xs.any():
        return 1.0
    return float(stats.wilcoxon(xs).pvalue)


def paired_test(diffs: Iterable[float]) -> tuple[str, float]:
    """(name, two-sided p) of the paired test for these differences: the exact sign-flip permutation
    test below :data:`WILCOXON_FROM` pairs, Wilcoxon's signed-rank test from there on."""
    xs = _finite(diffs)
    if len(xs) >= WILCOXON_FROM:
        return "Wilcoxon signed-rank", wilcoxon_test(xs)
    return "exact sign-flip permutation", sign_flip_test(xs)


def smallest_p(n: int) -> float:
    """The smallest two-sided p the sign-flip or signed-rank test can give with ``n`` pairs."""
    return min(1.0, 2.0 / 2 ** n) if n else 1.0


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (``statsmodels.stats.multitest.multipletests``)."""
    from statsmodels.stats.multitest import multipletests
    ps = [float(p) for p in pvalues]
    return [float(p) for p in multipletests(ps, method="holm")[1]] if ps else []


def discordant(truth: "np.ndarray", first: "np.ndarray", second: "np.ndarray") -> tuple[int, int]:
    """(images only ``first`` gets right, images only ``second`` gets right): McNemar's counts."""
    right_1, right_2 = first == truth, second == truth
    return int((right_1 & ~right_2).sum()), int((~right_1 & right_2).sum())


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p from the discordant counts (``scipy.stats.binomtest``, p = 1/2).

    >>> mcnemar_exact(30, 10)
    0.0022...
    """
    from scipy import stats
    n = only_first + only_second
    return 1.0 if n == 0 else float(stats.binomtest(only_first, n, 0.5).pvalue)


def cohens_dz(diffs: Iterable[float]) -> float | None:
    """Effect size of paired differences: their mean over their sample standard deviation.
    None below 2 differences; ±inf when they are all equal and not 0."""
    xs = _finite(diffs)
    if len(xs) < 2:
        return None
    sd, mean = float(xs.std(ddof=1)), float(xs.mean())
    if sd == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd


def repeats_needed(diffs: Iterable[float], alpha: float = ALPHA, power: float = 0.8) -> int | None:
    """About how many repeats would detect the observed mean difference, at the observed spread of
    the differences, with probability ``power``: a paired t-test's sample size
    (``statsmodels.stats.power.TTestPower``), over Wilcoxon's efficiency (3/pi), and at least the
    smallest n at which the rank tests can reach ``alpha``. None when the mean difference is 0 or
    there is no spread to go by (fewer than 2 differences)."""
    from statsmodels.stats.power import TTestPower
    xs = _finite(diffs)
    dz = cohens_dz(xs)
    if dz is None or dz == 0:
        return None
    floor = next(n for n in range(1, 64) if smallest_p(n) <= alpha)
    if abs(dz) >= 5:  # n <= 2.5 for a t-test (and statsmodels' solver stops converging near 10)
        return floor
    n = TTestPower().solve_power(effect_size=abs(dz), alpha=alpha, power=power, alternative="two-sided")
    return max(floor, math.ceil(float(n) / WILCOXON_EFFICIENCY))


# ---------------------------------------------------------------- factor effects
@dataclass(frozen=True)
class Term:
    """One row of an analysis of variance: a factor, an interaction (``a × b``) or the residual."""

    name: str
    df: float
    sum_sq: float
    f: float | None  # None for the residual
    p: float | None
    eta_sq: float  # the term's share of the total sum of squares (η²)


def anova(values: Iterable[float], factors: dict[str, list]) -> list[Term]:
    """Analysis of variance of ``values`` over categorical ``factors`` (name -> level per value),
    with every interaction when each cell of the grid holds at least one value and some hold two
    or more, else main effects only (``statsmodels`` ``ols`` + ``anova_lm``, type II sums of
    squares). Factors with one level are left out. ``[]`` when there are too few values to test.

    >>> anova([0.90, 0.91, 0.97, 0.96], {"units": [10, 10, 300, 300]})[0].name
    'units'
    """
    import numpy as np
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm
    y = np.asarray(list(values), dtype=float)
    keep = np.isfinite(y)
    names = [n for n, levels in factors.items() if len({repr(v) for v, k in zip(levels, keep) if k}) > 1]
    frame = pd.DataFrame({f"f{i}": [repr(v) for v in factors[n]] for i, n in enumerate(names)} | {"y": y})[keep]
    if not names:
        return []
    columns = [f"f{i}" for i in range(len(names))]
    cells = frame.groupby(columns).size()
    full = np.prod([frame[c].nunique() for c in columns])
    interact = len(names) > 1 and len(cells) == full and len(frame) > full
    main_df = sum(frame[c].nunique() - 1 for c in columns)
    if len(frame) - (full if interact else 1 + main_df) < 1:
        return []
    formula = "y ~ " + (" * " if interact else " + ").join(f"C({c})" for c in columns)
    table = anova_lm(ols(formula, data=frame).fit(), typ=2)
    total = float(((frame["y"] - frame["y"].mean()) ** 2).sum())
    label = dict(zip((f"C({c})" for c in columns), names))
    out = []
    for index, row in table.iterrows():
        name = "residual" if index == "Residual" else " × ".join(label[part] for part in index.split(":"))
        f, p = (None, None) if index == "Residual" else (float(row["F"]), float(row["PR(>F)"]))
        out.append(Term(name, float(row["df"]), float(row["sum_sq"]), f, p,
                        float(row["sum_sq"]) / total if total else 0.0))
    return out
