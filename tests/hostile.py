"""Helpers for the reliability tests: a tiny study, a reference run, damaging files, stopping a run
at a chosen point, and the CLI called in this process (exit status, stdout, stderr)."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from unittest import mock

import pytest

from conftest import MLP, tiny_study
from mnistlab.api import load_study, run
from mnistlab.store import Store

CLI = [sys.executable, "-m", "mnistlab.cli"]
STUDY = tiny_study(name="tiny", models={"a": MLP}, epochs=3, train_size=600, test_size=200)
TWO = tiny_study(name="two", models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}, epochs=2,
                 train_size=600, test_size=200)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist):
    """The tiny study trained once, uninterrupted: the numbers every interrupted run must end with."""
    path = write(tmp_path_factory.mktemp("reference"))
    train(path)
    return finals(path)


def write(folder: Path, text: str = STUDY, name: str = "study.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def train(path: Path, **kwargs):
    """Run the study file at ``path`` to its end in this process; the store is closed afterwards."""
    store = Store.for_study(path)
    try:
        return run(load_study(path), store, **kwargs)
    finally:
        store.engine.dispose()


def interrupt_at(monkeypatch, epoch: int) -> None:
    """Make the next training stop (Ctrl-C) right after epoch ``epoch`` is committed."""
    real = Store.commit_epoch

    def commit_then_stop(self, run_id, row, *args):
        real(self, run_id, row, *args)
        if row["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Store, "commit_epoch", commit_then_stop)


def interrupted(path: Path, monkeypatch, epoch: int = 2) -> None:
    """Train the study at ``path`` until epoch ``epoch`` is committed, then press Ctrl-C."""
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch)
        with pytest.raises(KeyboardInterrupt):
            train(path)


def finals(path: Path) -> dict[str, dict]:
    """Model -> (status, final metrics, epochs of its history) of a study's runs."""
    store = Store.for_study(path, read_only=True)
    try:
        return {r["model"]: {"status": r["status"], "test_loss": r["test_loss"], "test_accuracy": r["test_accuracy"],
                             "epochs": [h["epoch"] for h in store.history(r["id"])]} for r in store.runs()}
    finally:
        store.engine.dispose()


def same_numbers(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for model in want:
        assert got[model]["status"] == "done" and got[model]["epochs"] == want[model]["epochs"]
        assert got[model]["test_loss"] == pytest.approx(want[model]["test_loss"], rel=1e-6, abs=1e-7)
        assert got[model]["test_accuracy"] == want[model]["test_accuracy"]


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (SQLite's transient -wal/-shm files left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def flip(path: Path) -> None:
    """Invert 64 bytes in the middle of the file (its tensor data)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


DAMAGE = {"flipped": flip, "truncated": truncate, "deleted": lambda p: p.unlink()}


def invoke(capsys, *args) -> tuple[int, str, str]:
    """``mnistlab ARGS`` in this process: (exit status, stdout, stderr)."""
    from mnistlab import cli
    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["mnistlab", *map(str, args)]), pytest.raises(SystemExit) as done:
        cli.main()
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


class Notes:
    """A reporter that keeps the runner's notes."""

    def __init__(self):
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)

    def __getattr__(self, name):  # every other report is ignored
        return lambda *args, **kwargs: None
