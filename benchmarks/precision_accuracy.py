"""fp32 against bf16 on the same study, seed by seed: is bf16's accuracy within the seeds' spread?

    .venv/bin/python -m benchmarks.precision_accuracy                       # benchmarks/bf16_accuracy.toml
    .venv/bin/python -m benchmarks.precision_accuracy --study my.toml --threads 2 --device cuda

Trains every run of the study twice through mnistlab's runner (each precision into its own scratch
store, the same seeds), then prints a Markdown table: test accuracy per seed, mean ± std (n), the
paired difference bf16 - fp32 with its 95% CI (t) and the paired t-test's p (scipy), and the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(study, precision: str, threads: int, device: str) -> tuple[dict[int, float], float]:
    """{repeat: test accuracy} of the study's runs trained in ``precision``, and the wall seconds."""
    from mnistlab.api import EngineOptions, Store, run

    with tempfile.TemporaryDirectory() as scratch:
        store = Store(f"sqlite:///{scratch}/{precision}.db")
        start = time.perf_counter()
        run(study, store, engine=EngineOptions(precision=precision, threads=threads, device=device))
        seconds = time.perf_counter() - start
        return {r["repeat"]: r["test_accuracy"] for r in store.runs(study=study.name)}, seconds


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, default=ROOT / "benchmarks" / "bf16_accuracy.toml")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    from scipy import stats

    from mnistlab.api import load_study

    study = load_study(args.study)
    results = {precision: train(study, precision, args.threads, args.device) for precision in ("fp32", "bf16")}
    seeds = sorted(results["fp32"][0])
    print(f"{study.name} ({args.study.name}), {args.device}, {args.threads} threads: test accuracy per repeat (its own seed)")
    print("| precision | " + " | ".join(f"repeat {s}" for s in seeds) + " | mean ± std (n) | wall s |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for precision, (accuracy, seconds) in results.items():
        values = [accuracy[s] for s in seeds]
        print(f"| {precision} | " + " | ".join(f"{v:.4f}" for v in values)
              + f" | {statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)}) | {seconds:.0f} |")
    diff = [results["bf16"][0][s] - results["fp32"][0][s] for s in seeds]
    mean, sem = statistics.mean(diff), stats.sem(diff)
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    p_value = stats.ttest_rel([results["bf16"][0][s] for s in seeds], [results["fp32"][0][s] for s in seeds]).pvalue
    print(f"| bf16 - fp32 | " + " | ".join(f"{d:+.4f}" for d in diff)
          + f" | {mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}], paired t p = {p_value:.2f} | "
          f"{results['bf16'][1] / results['fp32'][1]:.2f}x |")


if __name__ == "__main__":
    main()
