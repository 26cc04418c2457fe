"""A hostile but fair user: a damaged or read-only database, a mistyped --store, a password in a
URL, odd run-id prefixes, two study files with one name, broken data, a killed --workers parent."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hostile import CLI, STUDY, TWO, Notes, invoke, train, write
from mnistlab.api import load_study, run
from mnistlab.errors import DataError, StoreError
from mnistlab.store import Store
from mnistlab.store.db import mask, where


def spec(run_id: str) -> dict:
    return {"id": run_id, "model": "m", "repeat": 0, "point": "", "sweep": {}, "layers": ["Dense(10)"],
            "dataset": "mnist", "epochs": 2, "batch_size": 128, "optimizer": "adam()", "loss": "x",
            "validation": "test", "train_size": None, "test_size": None, "seed": 0, "study": "s"}


# ---------------------------------------------------------------- a damaged database
def test_corrupted_page_is_one_line_from_every_command_and_run_writes_nothing(tmp_path, capsys):
    db = tmp_path / "mnistlab.db"
    store = Store(str(db))
    store.register({"name": "s", "description": "x" * 2000}, [spec(f"{i:016x}") for i in range(300)])
    store.engine.dispose()
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 8 * page
    data[4 * page:5 * page] = bytes((i * 7 + 3) % 256 for i in range(page))  # a page in the middle
    db.write_bytes(bytes(data))
    study = write(tmp_path, STUDY)
    for args in (["table", "s"], ["ls"], ["ls", "s"], ["report", "s", "-o", tmp_path / "r.html"], ["run", study]):
        code, out, err = invoke(capsys, *args, "--store", db)
        assert code == 2, (args, err)
        assert "the database is damaged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert db.read_bytes() == bytes(data)  # `run` checked before writing anything
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- read-only and missing stores
def as_reader(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run as a user who may not write the store: `nobody` where the tests run as root, else us after
    the files were made read-only."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + command, capture_output=True, text=True, env=env, timeout=300)


def test_read_only_store_is_readable(tmp_path):
    from test_report import STUDY as NAME, make_study
    folder = Path(tempfile.mkdtemp(prefix="mnistlab-ro-"))
    try:
        store = make_study(folder)
        run_id = store.runs(study=NAME)[0]["id"]
        store.engine.dispose()
        out = folder / "out"
        out.mkdir()
        for path in [*folder.rglob("*"), folder]:  # readable by anyone, writable by no one but root
            path.chmod(0o555 if path.is_dir() else 0o444)
        out.chmod(0o777)
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        env = dict(os.environ, MNISTLAB_DATA=str(out), HOME=str(out))
        db = folder / "x.db"
        for args in (["ls", "--store", db], ["table", NAME, "--store", db], ["show", run_id[:8], "--store", db],
                     ["report", NAME, "--store", db, "-o", out / "r.html"]):
            done = as_reader([*CLI, *map(str, args)], env)
            assert done.returncode == 0, (args, done.stderr)
        assert (out / "r.html").stat().st_size > 10_000
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.parent != out} == \
            {p: b for p, b in before.items() if p.parent != out}
        assert not list(folder.glob("x.db-*"))  # no -wal or -shm left beside it
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(folder)])
        subprocess.run(["rm", "-rf", str(folder)])


def test_mistyped_store_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nope" / "mnistlab.db"
    for args in (["ls"], ["table", "s"], ["show", "abcd1234"], ["report", "s", "-o", tmp_path / "r.html"]):
        code, _, err = invoke(capsys, *args, "--store", missing)
        assert code == 2 and f"no store at {missing}" in err, (args, err)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "r.html").exists()
    study = write(tmp_path / "fresh", STUDY)  # the study's default store, not run yet
    code, _, err = invoke(capsys, "table", study)
    assert code == 2 and "no store at" in err and not (tmp_path / "fresh" / "mnistlab.db").exists()


# ---------------------------------------------------------------- passwords, run ids
def test_passwords_are_never_printed(capsys):
    assert mask("postgresql+psycopg://me:s3cret@db.example:5432/x") == "postgresql+psycopg://me:***@db.example:5432/x"
    assert "s3cret" not in where(sa.create_engine("postgresql+psycopg://me:s3cret@localhost/x"))
    for url in ("postgresql+nosuchdriver://me:s3cret@localhost/x", "postgresql+psycopg://me:s3cret@127.0.0.1:9/x"):
        code, out, err = invoke(capsys, "ls", "--store", url)
        assert code == 2 and "s3cret" not in out + err and "***" in err, err


def test_run_id_prefixes_are_not_patterns(tmp_path, capsys):
    store = Store(str(tmp_path / "db.sqlite"))
    store.register({"name": "s"}, [spec("abcd1234ab"), spec("ef01234567")])
    for prefix in ("____", "%%%%", "ab_d", "abc%"):
        with pytest.raises(StoreError, match="is not a run id: ids are hexadecimal"):
            store.resolve(prefix)
    assert store.resolve("ABCD") == "abcd1234ab"
    code, _, err = invoke(capsys, "show", "____", "--store", tmp_path / "db.sqlite")
    assert code == 2 and "not a run id" in err


# ---------------------------------------------------------------- two study files, one name
def test_two_study_files_with_one_name_are_warned_about(tmp_path, capsys, mnist):
    first = write(tmp_path, TWO.replace('name = "two"', 'name = "[bold]same"'), name="first.toml")
    second = write(tmp_path, TWO.replace('name = "two"', 'name = "[bold]same"').replace("epochs = 2", "epochs = 1"),
                   name="second.toml")
    notes = Notes()
    train(first, reporter=notes)
    assert notes.lines == []
    code, _, err = invoke(capsys, "run", second, "-q", "--no-table")
    assert code == 0
    warning = [line for line in err.splitlines() if "last run from" in line]
    assert len(warning) == 1 and "'[bold]same'" in warning[0] and str(first) in warning[0]
    assert "another `name`" in warning[0]
    moved = write(tmp_path / "moved", second.read_text(), name="second.toml")  # same text elsewhere: same study
    notes = Notes()
    run(load_study(moved), Store(str(tmp_path / "mnistlab.db")), reporter=notes)
    assert notes.lines == []


# ---------------------------------------------------------------- data problems
def test_corrupt_data_cache_stops_the_study_before_any_claim(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip file" * 100)
    study = write(tmp_path, TWO)
    env = dict(os.environ, MNISTLAB_DATA=str(cache))
    done = subprocess.run([*CLI, "run", str(study)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # after the plan's line
    assert len(errors) == 1 and "corrupt cache" in errors[0] and errors[0] == done.stderr.strip().splitlines()[-1]
    assert {r["status"] for r in Store.for_study(study).runs()} == {"pending"}  # no run charged with it


def test_unreachable_sources_stop_the_study_before_any_claim(tmp_path, monkeypatch):
    from mnistlab import data
    from mnistlab.data.sources import NpzUrl
    from mnistlab.runner import driver
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "empty"))
    dead = dataclasses.replace(data.DATASETS["mnist"], sources=(NpzUrl("nowhere", "http://127.0.0.1:9/mnist.npz"),))
    monkeypatch.setitem(data.DATASETS, "mnist", dead)
    driver._tensors.cache_clear()  # tensors other tests loaded must not hide the missing data
    try:
        study = write(tmp_path, TWO)
        with pytest.raises(DataError, match="could not fetch mnist from any source: nowhere"):
            train(study, group=False)
    finally:
        driver._tensors.cache_clear()
    assert {r["status"] for r in Store.for_study(study).runs()} == {"pending"}


# ---------------------------------------------------------------- a killed --workers parent
def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killed_workers_parent_leaves_no_workers(tmp_path, mnist):
    models = {f"m{i}": [f"Dense({20 + i}, activation='relu')", "Dense(10, activation='softmax')"] for i in range(2)}
    from conftest import tiny_study
    study = write(tmp_path, tiny_study(models=models, epochs=50, train_size=20000, test_size=500))
    parent = subprocess.Popen([*CLI, "run", str(study), "--workers", "2", "-q"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # until both workers have claimed a run
            workers = children(parent.pid)
            db = tmp_path / "mnistlab.db"
            if len(workers) == 2 and db.exists():
                runs = Store(str(db), read_only=True).runs()
                if sum(r["status"] == "running" for r in runs) == 2:
                    break
            time.sleep(0.2)
        assert len(workers) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(alive(w) for w in workers), "workers went on training after their parent died"
    finally:
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
