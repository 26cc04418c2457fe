"""Does a run's outcome depend on the number of torch threads? Train each model of a study in this
process once per thread count, from the same seed, and print the outcomes and training times side by
side (the time ratio says whether N one-thread workers would outrun one N-thread process).

    python docs/experiments/threads_rounding.py benchmarks/cnn_workers.toml --threads 2 1

Same numbers to the last bit mean the kernels sum in the same order at every thread count; any
difference is float rounding that training then amplifies (docs/RELIABILITY.md, "Resumed in
another way").
"""

from __future__ import annotations

import argparse

import torch

from mnistlab.api import load_study
from mnistlab.engine.fit import fit
from mnistlab.engine.options import EngineOptions
from mnistlab.runner.driver import data_for
from mnistlab.spec import expand


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = p.parse_args()
    print("| model | " + " | ".join(f"{t} thread{'s' * (t != 1)}: test acc / loss, s" for t in args.threads)
          + " | same bits |")
    print("|---|" + "---|" * (len(args.threads) + 1))
    for spec in expand(load_study(args.study)):
        results = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            engine = EngineOptions(threads=threads)
            results.append(fit(spec, data_for(spec, engine), options=engine))
        same = all(r.test_loss == results[0].test_loss and all(torch.equal(r.weights[k], results[0].weights[k])
                                                               for k in r.weights) for r in results)
        cells = " | ".join(f"{r.test_accuracy:.4f} / {r.test_loss:.4f}, {r.seconds:.1f}" for r in results)
        print(f"| {spec.model} | {cells} | {'yes' if same else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
