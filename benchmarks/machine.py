"""How busy the machine is, so a timing taken beside other work can be recognised.

Timings on a shared machine are only comparable when nothing else runs: PyTorch's OpenMP loop,
for one, slows down several times over when another process takes one of its cores. Both the
harness (per process) and the peers (per epoch) measure the cores *other* processes kept busy::

    clock = EpochClock()
    clock.start()
    ...                      # one epoch
    clock.stop()             # {'seconds': 0.52, 'others': 0.01}

Linux only (/proc/stat); no dependencies, so every venv can import it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot, all processes together."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class EpochClock:
    """Wall seconds between start() and stop(), and the cores others used meanwhile."""

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), busy_cpu_seconds(), time.process_time()

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        others = (busy_cpu_seconds() - self.busy0) - (time.process_time() - self.own0)
        return {"seconds": round(wall, 4), "others": round(max(0.0, others / wall), 3)}


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to `max_wait` s) until the machine's busy cores, sampled over 1 s windows, drop
    under `threshold`; returns the last sample (the caller itself sleeps meanwhile)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        busy = busy_cpu_seconds() - before
        if busy < threshold or time.monotonic() > deadline:
            return busy
