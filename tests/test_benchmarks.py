"""The benchmark scripts keep working as the engine changes (engine_ab called a private function
with an old signature and crashed). No timing is asserted: only that each path runs, resolves to
the engine it names, and measures something."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_engine_ab_runs_each_path_as_named(mnist):
    out = bench("benchmarks.engine_ab", "--workload", "W1", "--rounds", "2", "--images", "512",
                "--paths", "mkl-autograd,onednn-fast", "--threads", "1")
    rows = {m[1]: (float(m[2]), m[3]) for m in re.finditer(r"^\s+(\S+)\s+fp32\s+([\d.]+)\s+runs as (\S+)", out, re.M)}
    assert set(rows) == {"mkl-autograd", "onednn-fast"}, out
    assert rows["mkl-autograd"][1] == "torch" and rows["onednn-fast"][1] in ("onednn+graph-free", "torch"), out
    assert all(ms > 0 for ms, _ in rows.values())
