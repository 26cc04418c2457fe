"""A process killed at each point of the epoch commit sequence (checkpoint file, then its record
and the epoch's row in one transaction, then old files deleted; at the end the weights, then the
status) loses nothing: a plain rerun ends with every history row and the numbers of a run never
interrupted, and says nothing was damaged."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hostile import Notes, finals, reference, same_numbers, train, write  # noqa: F401
from mnistlab.store import Store

# python -c CHILD STUDY POINT: train the study, dying (os._exit, as SIGKILL would) at POINT in epoch 2
CHILD = r'''
import os, sys
from mnistlab.api import load_study, run
from mnistlab.store import Store, files as artifacts

study, point = sys.argv[1], sys.argv[2]
flag = {}

def die():
    os._exit(9)

def when(name, before=None, after=None):
    real = getattr(Store, name)
    def wrapper(self, *args, **kwargs):
        if before and before(*args):
            die()
        result = real(self, *args, **kwargs)
        if after and after(*args):
            die()
        return result
    setattr(Store, name, wrapper)

second = "checkpoint-2.safetensors"
if point == "writing":  # half the checkpoint file on disk
    real_write = artifacts.write_atomic
    def half(path, data):
        if path.name == second:
            path.with_name(path.name + ".tmp" + str(os.getpid())).write_bytes(data[:len(data) // 2])
            die()
        real_write(path, data)
    artifacts.write_atomic = half
elif point == "written":  # the file in place, nothing recorded
    when("commit_epoch", before=lambda run_id, row, *a: row["epoch"] == 2)
elif point == "in-transaction":  # the row and the record written, not committed
    when("_rotate", after=lambda conn, run_id, kind, path, sha: path.endswith(second))
elif point == "committed":  # committed, the files it replaced not yet deleted
    when("commit_epoch", before=lambda run_id, row, *a: flag.update(pruning=row["epoch"] == 2))
    when("_prune", before=lambda run_id: flag.get("pruning"))
elif point == "epoch-done":  # all of epoch 2 done
    when("commit_epoch", after=lambda run_id, row, *a: row["epoch"] == 2)
elif point == "weights-written":  # the final weights and confusion matrices written, not marked done
    when("finish", before=lambda run_id, status: True)
elif point == "finished":  # marked done, its checkpoints not yet forgotten
    when("finish", after=lambda run_id, status: flag.update(finished=True))
    when("drop_checkpoints", before=lambda run_id: flag.get("finished"))
run(load_study(study))
'''

POINTS = {"writing": 1, "written": 1, "in-transaction": 1, "committed": 2, "epoch-done": 2,
          "weights-written": 3, "finished": 3}  # point -> epochs the store holds after the kill


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_point_loses_nothing(tmp_path, reference, point):
    path = write(tmp_path)
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), point], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 9, done.stderr
    store = Store.for_study(path, read_only=True)
    run = store.runs()[0]
    epochs = [h["epoch"] for h in store.history(run["id"])]
    assert epochs == list(range(1, POINTS[point] + 1)) and run["epochs_done"] == POINTS[point]
    recorded = store.load_arrays(run["id"], "checkpoint")  # verified: the file behind the last row
    assert int(recorded[1]["epoch"]) == POINTS[point]
    store.engine.dispose()
    notes = Notes()
    train(path, reporter=notes)
    assert notes.lines == []  # nothing damaged, nothing to restore: the order alone kept it whole
    same_numbers(finals(path), reference)
    if point != "finished":
        files = sorted(p.name for p in (tmp_path / "mnistlab-artifacts" / run["id"]).iterdir())
        assert files == ["predictions.safetensors", "weights.safetensors"]  # no half-written or replaced file left behind
