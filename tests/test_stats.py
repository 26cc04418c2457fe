"""report/stats.py against reference computations on the same numbers (scipy, statsmodels, or the
definition written out), on constructed data with known answers, and by simulation: a test must not
call identical distributions different more often than it promises."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import TTestPower

from mnistlab.report import stats

DIFFS = [0.0042, -0.0011, 0.0031, 0.0027, 0.0009, 0.0050, -0.0004, 0.0018]


def test_bootstrap_interval_is_scipys_percentile_bootstrap():
    reference = sps.bootstrap((np.array(DIFFS),), np.mean, method="percentile", n_resamples=9999, rng=0)
    low, high = stats.bootstrap_ci(DIFFS)
    assert (low, high) == pytest.approx((reference.confidence_interval.low, reference.confidence_interval.high))
    assert low < np.mean(DIFFS) < high
    assert stats.bootstrap_ci([0.01]) is None
    assert stats.bootstrap_ci([0.01, 0.01, 0.01]) == pytest.approx((0.01, 0.01))  # no spread: a point


def test_sign_flip_test_enumerates_every_sign():
    def by_hand(d):  # the definition: the share of the 2^n sign patterns at least as extreme
        observed = abs(np.mean(d))
        means = [abs(np.mean(np.multiply(d, signs))) for signs in itertools.product((1, -1), repeat=len(d))]
        return np.mean([m >= observed - 1e-12 for m in means])
    for d in (DIFFS[:3], DIFFS[:5], DIFFS):
        assert stats.sign_flip_test(d) == pytest.approx(by_hand(d))
    assert stats.sign_flip_test([0.01, 0.02, 0.015]) == pytest.approx(0.25)  # 2 of 8: the smallest at n=3
    assert stats.sign_flip_test([0.0, 0.0]) == 1.0
    assert stats.smallest_p(3) == 0.25 and stats.smallest_p(6) == pytest.approx(0.03125)


def test_wilcoxon_is_scipys_and_exact_for_six_pairs():
    assert stats.wilcoxon_test(DIFFS) == pytest.approx(sps.wilcoxon(DIFFS).pvalue)
    assert stats.wilcoxon_test([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)  # all signs positive: 2/2^6
    assert stats.paired_test(DIFFS[:5])[0] == "exact sign-flip permutation"
    assert stats.paired_test(DIFFS[:6])[0] == "Wilcoxon signed-rank"


def test_holm_against_the_definition():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, made monotone: 0.04, 0.09, 0.09, 0.20
    assert stats.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert stats.holm([]) == []


def test_mcnemar_is_the_exact_binomial_test_on_discordant_counts():
    truth = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 10)
    a, b = truth.copy(), truth.copy()
    a[:12] = (truth[:12] + 1) % 10  # the first model misses 12 images
    b[8:13] = (truth[8:13] + 1) % 10  # the second misses 5, 4 of them shared
    assert stats.discordant(truth, a, b) == (1, 8)  # only a right: image 12; only b right: images 0-7
    table = [[87, 1], [8, 4]]  # both right, only a right / only b right, both wrong
    assert stats.mcnemar_exact(1, 8) == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert stats.mcnemar_exact(1, 8) == pytest.approx(sps.binomtest(1, 9).pvalue)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_effect_size_and_repeats_needed():
    d = np.array(DIFFS)
    assert stats.cohens_dz(DIFFS) == pytest.approx(d.mean() / d.std(ddof=1))
    assert stats.cohens_dz([0.01]) is None and stats.cohens_dz([0.01, 0.01]) == math.inf
    n = stats.repeats_needed(DIFFS)
    t_n = TTestPower().solve_power(effect_size=abs(stats.cohens_dz(DIFFS)), alpha=0.05, power=0.8)
    assert n == max(6, math.ceil(t_n / (3 / math.pi)))
    assert TTestPower().power(abs(stats.cohens_dz(DIFFS)), n, 0.05) >= 0.8
    noisier = stats.repeats_needed([x * (1 if i % 2 else 3) for i, x in enumerate(DIFFS)])
    assert noisier > n  # more spread at a similar mean: more repeats
    assert stats.repeats_needed([0.01, 0.011, 0.012]) == 6  # huge effect: the rank tests' minimum
    assert stats.repeats_needed([0.01, 0.011, 0.012], alpha=0.025) == 7  # Holm's first step of two
    assert stats.repeats_needed([0.01, -0.01]) is None  # mean 0: nothing to detect


@pytest.mark.parametrize("n", [4, 6, 10])
def test_identical_distributions_are_rarely_called_different(n):
    rng = np.random.default_rng(n)
    rejected = [stats.paired_test(rng.normal(0, 0.003, n))[1] < 0.05 for _ in range(300)]
    assert np.mean(rejected) <= 0.05 + 0.03  # the test's promise, with room for 300 draws
    discordant = rng.binomial(60, 0.5, 300)  # McNemar: the two models equally good
    assert np.mean([stats.mcnemar_exact(k, 60 - k) < 0.05 for k in discordant]) <= 0.08


def test_a_real_difference_is_found():
    rng = np.random.default_rng(1)
    assert stats.paired_test(rng.normal(0.01, 0.003, 8))[1] < 0.01
    assert stats.mcnemar_exact(20, 60) < 1e-4


def test_anova_one_factor_is_scipys_f_test():
    rng = np.random.default_rng(0)
    groups = [rng.normal(mu, 0.01, 4) for mu in (0.90, 0.92, 0.95)]
    levels = [lr for lr, g in zip((0.1, 0.01, 0.001), groups) for _ in g]
    terms = stats.anova(np.concatenate(groups), {"optimizer.learning_rate": levels})
    reference = sps.f_oneway(*groups)
    assert [t.name for t in terms] == ["optimizer.learning_rate", "residual"]
    assert terms[0].f == pytest.approx(reference.statistic) and terms[0].p == pytest.approx(reference.pvalue)
    assert terms[0].df == 2 and terms[1].df == 9
    assert terms[0].eta_sq + terms[1].eta_sq == pytest.approx(1.0)


def test_anova_finds_the_factor_made_to_matter_and_not_the_other():
    rng = np.random.default_rng(3)
    units, rates, values = [], [], []
    for u, lr, _ in itertools.product((10, 300), (0.1, 0.01), range(4)):
        units.append(u)
        rates.append(lr)
        values.append((0.85 if u == 10 else 0.95) + rng.normal(0, 0.01))  # the rate does nothing
    terms = {t.name: t for t in stats.anova(values, {"units": units, "optimizer.learning_rate": rates})}
    assert set(terms) == {"units", "optimizer.learning_rate", "units × optimizer.learning_rate", "residual"}
    assert terms["units"].p < 1e-6 and terms["units"].eta_sq > 0.9
    assert terms["optimizer.learning_rate"].p > 0.05 and terms["optimizer.learning_rate"].eta_sq < 0.05
    # balanced: the sums of squares are the textbook ones
    y, u = np.array(values), np.array(units)
    grand = y.mean()
    ss_units = sum((u == level).sum() * (y[u == level].mean() - grand) ** 2 for level in (10, 300))
    assert terms["units"].sum_sq == pytest.approx(ss_units)
    assert sum(t.eta_sq for t in terms.values()) == pytest.approx(1.0)
    assert terms["units"].p == pytest.approx(sps.f.sf(terms["units"].f, 1, terms["residual"].df))


def test_anova_without_replicates_has_no_interaction_and_too_few_values_none():
    terms = stats.anova([0.9, 0.91, 0.95, 0.97], {"a": [1, 1, 2, 2], "b": ["x", "y", "x", "y"]})
    assert [t.name for t in terms] == ["a", "b", "residual"]
    assert stats.anova([0.9, 0.95], {"a": [1, 2]}) == []  # no degree of freedom left for the error
    assert stats.anova([0.9, 0.95, 0.93], {"a": [1, 1, 1]}) == []  # one level: not a factor
