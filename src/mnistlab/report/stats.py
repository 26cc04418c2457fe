"""Statistics over repeats, computed in one tested place (seed 002 summed without resetting).

>>> summarize([0.97, 0.98, 0.975])
Stat(mean=0.975, std=0.005, n=3, ci95=(0.9626..., 0.9874...))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

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
