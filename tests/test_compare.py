"""report/compare.py on studies written through the store's API with known numbers (no torch): the
comparisons are the reference statistics of the same paired numbers, the verdicts follow from them,
and what is missing is said."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy import stats as sps

from mnistlab.errors import ReportError
from mnistlab.report import stats
from mnistlab.report.compare import compare, render
from mnistlab.report.html import write_report
from mnistlab.store import Store

SEEDS = [11, 22, 33, 44, 55, 66, 77, 88]
TEST_LABELS = np.arange(1000, dtype=np.uint8) % 10


def spec(model: str, repeat: int, sweep: dict | None = None) -> dict:
    sweep = sweep or {}
    point = ", ".join(f"{k.removeprefix('optimizer.')}={v}" for k, v in sorted(sweep.items()))
    ident = hashlib.sha256(f"{model}|{point}|{repeat}".encode()).hexdigest()[:16]
    return {"id": ident, "layers": ["Dense(10, activation='softmax')"], "dataset": "mnist", "epochs": 1,
            "batch_size": 32, "optimizer": "adam", "loss": "categorical_crossentropy", "validation": "test",
            "train_size": 100, "test_size": 1000, "seed": SEEDS[repeat], "study": "s", "model": model,
            "repeat": repeat, "sweep": sweep, "point": point}


def finish(store: Store, s: dict, accuracy: float, wrong: int | None = None, loss: float = 0.3) -> None:
    """A done run; with ``wrong``, predictions that miss images ``wrong`` .. ``wrong + k`` where k makes
    its accuracy on the 1,000 test images ``accuracy``."""
    if wrong is not None:
        predicted = TEST_LABELS.copy()
        missed = round((1 - accuracy) * len(predicted))
        predicted[wrong:wrong + missed] = (predicted[wrong:wrong + missed] + 1) % 10
        store.save_arrays(s["id"], "predictions", {"test": predicted, "test_labels": TEST_LABELS})
    store.finish(s["id"], "done", params=(10, 10, 0), seconds=1.0,
                 metrics={"test_accuracy": accuracy, "test_loss": loss, "train_accuracy": 0.9, "train_loss": 0.2})


def study(tmp_path, models: dict[str, list[float]], predictions: bool = True, sweeps=None) -> Store:
    """Models with their test accuracies per repeat (repeat k has seed SEEDS[k] in every model)."""
    store = Store(f"sqlite:///{tmp_path}/c.db")
    specs = {(m, r): spec(m, r) for m, values in models.items() for r in range(len(values))}
    for (m, point), values in (sweeps or {}).items():
        specs |= {(m, point, r): spec(m, r, dict(point)) for r in range(len(values))}
    store.register({"name": "s"}, list(specs.values()))
    for (m, r), s in [(k, v) for k, v in specs.items() if len(k) == 2]:
        finish(store, s, models[m][r], wrong=r * 7 if predictions else None, loss=1 - models[m][r])
    for (m, point, r), s in [(k, v) for k, v in specs.items() if len(k) == 3]:
        finish(store, s, sweeps[(m, point)][r])
    return store


BASE = [0.950, 0.952, 0.948, 0.951, 0.949, 0.953, 0.950, 0.947]
BETTER = [0.957, 0.956, 0.955, 0.958, 0.954, 0.959, 0.956, 0.953]  # +0.003 to +0.007, every seed
SAME = [0.951, 0.950, 0.949, 0.953, 0.948, 0.952, 0.949, 0.948]


def test_eight_seeds_wilcoxon_bootstrap_holm_are_the_references(tmp_path):
    result = compare(study(tmp_path, {"base": BASE, "better": BETTER, "same": SAME}), "s")
    better, same = result.comparisons
    d = np.array(BETTER) - np.array(BASE)
    assert better.n == 8 and better.difference == pytest.approx(d.mean())
    reference = sps.bootstrap((d,), np.mean, method="percentile", rng=0)
    assert better.ci95 == pytest.approx((reference.confidence_interval.low, reference.confidence_interval.high))
    assert better.test == "Wilcoxon signed-rank" and better.p == pytest.approx(sps.wilcoxon(d).pvalue)
    assert [better.p_holm, same.p_holm] == pytest.approx(stats.holm([better.p, same.p]))
    assert better.effect_dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert better.verdict == "better" and better.text == "better"
    assert same.verdict == "no difference detected" and same.text.startswith("no difference detected at n=8")


def test_three_seeds_mcnemar_in_every_pair_and_its_counts(tmp_path):
    result = compare(study(tmp_path, {"base": BASE[:3], "worse": [0.90, 0.91, 0.90], "same": [0.952, 0.950, 0.949]}), "s")
    worse, same = result.comparisons
    pair = worse.pairs[0]  # repeat 0: both miss from image 0; base misses 50, worse 100
    assert (pair.only_baseline, pair.only_config) == (50, 0)
    assert pair.mcnemar_p == pytest.approx(sps.binomtest(50, 50).pvalue)
    assert worse.test == "McNemar exact, every seed pair" and worse.p == max(p.mcnemar_p for p in worse.pairs)
    assert worse.seed_test == "exact sign-flip permutation" and worse.seed_p == pytest.approx(0.25)
    assert worse.verdict == "worse" and worse.text == "worse on the test set in each of the 3 seed pairs"
    assert same.verdict == "no difference detected"
    assert same.text.startswith("no difference detected at n=3; about ") and "repeats would detect a difference of" in same.text


def test_one_run_each_mcnemar(tmp_path):
    result = compare(study(tmp_path, {"a": [0.90], "b": [0.94], "c": [0.905]}), "s")
    b, c = result.comparisons
    assert (b.pairs[0].only_baseline, b.pairs[0].only_config) == (0, 40)
    assert b.verdict == "better" and b.text == "better on the test set (one run each)"
    assert b.ci95 is None and b.effect_dz is None and b.seed_test is None
    assert c.verdict == "no difference detected" and "one run each" in c.text


def test_runs_without_predictions_are_named_and_the_seed_test_decides(tmp_path):
    store = study(tmp_path, {"base": BASE[:3], "worse": [0.90, 0.91, 0.90]}, predictions=False)
    result = compare(store, "s")
    (worse,) = result.comparisons
    assert worse.test == "exact sign-flip permutation" and worse.p == pytest.approx(0.25)
    assert worse.text.startswith("no difference detected at n=3; about 6 repeats would detect a difference of 0.04")
    assert len(result.notes) == 1 and "no stored test-set predictions for 6 run(s)" in result.notes[0]
    single = compare(study(tmp_path / "one", {"a": [0.90], "b": [0.94]}, predictions=False), "s")
    assert single.comparisons[0].verdict == "not tested" and "no stored test-set predictions" in single.comparisons[0].text


def test_loss_lower_is_better_and_json(tmp_path):
    store = study(tmp_path, {"base": BASE, "better": BETTER})
    result = compare(store, "s", metric="test_loss")  # loss = 1 - accuracy here
    assert result.comparisons[0].difference < 0 and result.comparisons[0].verdict == "better"
    assert result.comparisons[0].pairs[0].mcnemar_p is None  # McNemar is about test accuracy only
    data = json.loads(render(compare(store, "s"), "json"))
    assert data["baseline"] == "base" and data["comparisons"][0]["verdict"] == "better"
    assert data["comparisons"][0]["pairs"][0]["seed"] == SEEDS[0]
    assert "| better | 8 |" in render(compare(store, "s"), "markdown")


def test_baseline_choice_and_bad_input(tmp_path):
    store = study(tmp_path, {"base": BASE[:3], "other": SAME[:3]})
    assert compare(store, "s", baseline="other").baseline == "other"
    with pytest.raises(ReportError, match="not a model or configuration of the study; use one of: 'base'; 'other'"):
        compare(store, "s", baseline="nope")
    with pytest.raises(ReportError, match="--metric 'accuracy' is unknown"):
        compare(store, "s", metric="accuracy")
    with pytest.raises(ReportError, match="has no runs"):
        compare(store, "absent")


GRID = {("sweep", (("units", u), ("optimizer.learning_rate", lr))): [(0.85 if u == 10 else 0.95) + e
                                                                    for e in (0.004, -0.003, 0.001)]
        for u in (10, 300) for lr in (0.1, 0.01)}


def test_factor_effects_of_a_sweep(tmp_path):
    result = compare(study(tmp_path, {"base": BASE[:3]}, sweeps=GRID), "s")
    (factors,) = result.factors
    terms = {t.name: t for t in factors.terms}
    assert factors.model == "sweep" and factors.n == 12 and sorted(factors.factors) == ["optimizer.learning_rate", "units"]
    assert terms["units"].p < 1e-6 and terms["optimizer.learning_rate"].p > 0.5
    assert len(factors.means) == 4 and {m["n"] for m in factors.means} == {3}


def test_factor_effects_never_pool_precisions(tmp_path):
    """A sweep continued with --precision bf16 (more repeats) pooled both kinds of runs into one
    analysis of variance, though the table keeps them apart: here bf16 reverses the effect of units,
    and pooled, units read as no effect at all."""
    store = Store(f"sqlite:///{tmp_path}/c.db")
    runs = [(spec("sweep", r, {"units": u}), u, "fp32" if r < 3 else "bf16") for u in (10, 300) for r in range(6)]
    store.register({"name": "s"}, [s for s, _, _ in runs])
    for s, units, precision in runs:
        high = (units == 300) == (precision == "fp32")
        finish(store, s, (0.95 if high else 0.85) + (0.004, -0.003, 0.001)[s["repeat"] % 3])
        store.finish(s["id"], "done", environment={"precision": precision})
    by_model = {f.model: f for f in compare(store, "s").factors}
    assert sorted(by_model) == ["sweep (bf16)", "sweep (fp32)"]
    for factors in by_model.values():
        (units,) = [t for t in factors.terms if t.name == "units"]
        assert factors.n == 6 and units.p < 1e-4
    high, low = [0.954, 0.947, 0.951], [0.854, 0.847, 0.851]  # the same runs, precision left out
    pooled = stats.anova(high * 2 + low * 2, {"units": [10] * 3 + [300] * 3 + [10] * 3 + [300] * 3})[0]
    assert pooled.name == "units" and pooled.p > 0.5  # what one analysis over both precisions said


def test_report_section_forest_plot_verdicts_and_escaping(tmp_path):
    xss = "<script>alert(1)</script>"
    store = study(tmp_path, {"base": BASE[:3], xss: [0.90, 0.91, 0.90]}, sweeps=GRID)
    html = write_report(store, "s", tmp_path / "r.html").read_text()
    assert '<section id="differences"><h2>Which differences are real</h2>' in html
    assert xss not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-verdict="worse"' in html and '<td class="verdict" title="the baseline of the comparisons">baseline</td>' in html
    figures = {}
    for fid, body in __import__("re").findall(r'<script type="application/json" id="(fig-\d+)-data">(.*?)</script>', html):
        figures[fid] = json.loads(body)
    forest = next(f for f in figures.values() if "Paired differences" in f["layout"]["title"]["text"])
    worse = next(t for t in forest["data"] if t["name"] == "worse")
    assert worse["x"][0] == pytest.approx(np.mean([0.90 - 0.950, 0.91 - 0.952, 0.90 - 0.948]))
    interaction = next(f for f in figures.values() if f["layout"]["title"]["text"].startswith("Interaction of"))
    assert len(interaction["data"]) == 2 and len(interaction["data"][0]["x"]) == 2


def test_compare_never_imports_torch():
    import subprocess
    import sys
    code = ("import sys, mnistlab.report.compare, mnistlab.report.differences, mnistlab.report.stats; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
