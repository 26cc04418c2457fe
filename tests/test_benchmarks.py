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


def test_executors_times_each_pool_size_into_its_own_store(tmp_path, mnist):
    study = tmp_path / "two.toml"
    study.write_text('name = "two"\nseed = 0\n[train]\nepochs = 1\nbatch_size = 64\ntrain_size = 1000\n'
                     'test_size = 200\n' + "".join(f'[[model]]\nname = "m{u}"\nlayers = ["Dense({u}, activation='
                                                   f'\'relu\')", "Dense(10, activation=\'softmax\')"]\n'
                                                   for u in (16, 24)))
    out = bench("benchmarks.executors", "--study", str(study), "--workers", "1", "2", "--no-ray")
    rows = re.findall(r"^\| (inline|--workers \d)[^|]*\| ([\d.]+) \| (\d+) \| (\d+) of (\d+) \|", out, re.M)
    assert [r[0] for r in rows] == ["inline", "--workers 1", "--workers 2"], out  # no Ray row
    assert all(float(r[1]) > 0 and r[2] == "2" and r[4] == "2" for r in rows), out  # each pool trained both runs
    assert "Ray" not in out
