"""What a training process's heartbeat costs: one UPDATE of the runs it holds, once a minute
(``mnistlab.store.claims``). Times ``claims.beat`` on a throwaway SQLite store holding 1, 32 and
1,000 claimed runs (or on ``--store URL``, e.g. a PostgreSQL database made for it).

    python docs/experiments/heartbeat_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from mnistlab.store import Store, claims

SPEC = {"model": "m", "repeat": 0, "point": "", "sweep": {}, "layers": [], "dataset": "mnist", "epochs": 2,
        "batch_size": 8, "optimizer": "adam()", "loss": "x", "validation": "test", "seed": 0, "study": "beat"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="an empty database to use (default: a temporary SQLite file)")
    args = parser.parse_args()
    store = Store(args.store or f"sqlite:///{tempfile.mkdtemp()}/beat.db")
    store.register({"name": "beat"}, [dict(SPEC, id=f"r{i}") for i in range(1000)])
    claimed = 0
    for held in (1, 32, 1000):
        for i in range(claimed, held):
            store.claim(f"r{i}")
        claimed = held
        times = []
        for _ in range(20):
            start = time.perf_counter()
            assert claims.beat(store.engine) == held
            times.append(time.perf_counter() - start)
        print(f"{held:>5} runs held: a beat takes {statistics.median(times) * 1e3:.2f} ms (median of 20)")


if __name__ == "__main__":
    main()
