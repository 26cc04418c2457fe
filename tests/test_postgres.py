"""The store on PostgreSQL: studies, claims from several processes, resume, schema migration.

Each test gets a fresh database (fixture ``pg_url`` in conftest.py) on a throwaway cluster started from
Debian's binaries, or on $MNISTLAB_TEST_POSTGRES=postgresql+psycopg://user@host/db (a role that may
create databases); without either the tests skip.
"""

import datetime as dt
import json
import socket
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

import mnistlab.store as store_module
from conftest import MLP, tiny_study
from mnistlab.api import load_study, run
from mnistlab.report.table import comparison
from mnistlab.store import SCHEMA_VERSION, Store, StoreError

CHILD = """
import json, os, random, sys, time
{setup}
print("ready", flush=True)
while not os.path.exists(sys.argv[-1]):  # the go file: every process starts its work at once
    time.sleep(0.002)
{work}
print(json.dumps(result), flush=True)
sys.stdin.read()  # stays alive (its claims live) until every process has answered
"""


def spec(run_id):
    return {"id": run_id, "model": "m", "repeat": 0, "point": "", "sweep": {}, "layers": ["Dense(10)"],
            "dataset": "mnist", "epochs": 2, "batch_size": 128, "optimizer": "adam()", "loss": "x",
            "validation": "test", "train_size": None, "test_size": None, "seed": 0, "study": "s"}


def race(setup: str, work: str, args: list[str], processes: int, tmp_path) -> list:
    """Run ``work`` (which sets ``result``) in ``processes`` Pythons at once, after each did ``setup``."""
    go = tmp_path / f"go-{uuid.uuid4().hex[:6]}"
    code = CHILD.format(setup=setup, work=work)
    procs = [subprocess.Popen([sys.executable, "-c", code, *args, str(go)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    results = None
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * processes
        go.touch()
        results = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            if results is None:  # one failed: the others must not wait for a go file that never comes
                p.kill()
            p.wait(timeout=120)
    assert all(p.returncode == 0 for p in procs)
    return results


def test_study_on_postgres_skips_done_runs_and_tables(pg_url, write_study, mnist, tmp_path):
    path = write_study(tiny_study(name="pg", models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}, epochs=1))
    store = Store(pg_url, tmp_path / "artifacts")
    assert len(run(load_study(path), store).trained) == 2
    assert len(run(load_study(path), Store(pg_url, tmp_path / "artifacts")).skipped) == 2
    rows = comparison(store, "pg")
    assert [r.status for r in rows] == ["done", "done"] and rows[0].stats["test_accuracy"].mean > 0.5
    assert store.load_json(rows[0].run_ids[0], "confusion_test") is not None


def test_concurrent_claims_from_four_processes_take_each_run_once(pg_url, tmp_path):
    ids = [f"run{i:04d}" for i in range(120)]
    Store(pg_url, tmp_path).register({"name": "s"}, [spec(i) for i in ids])
    setup = f"from mnistlab.store import Store\nstore = Store(sys.argv[1], {str(tmp_path)!r})\nids = {ids!r}"
    claimed = race(setup, "random.shuffle(ids)\nresult = [i for i in ids if store.claim(i) == 'pending']",
                   [pg_url], 4, tmp_path)
    every = [i for got in claimed for i in got]
    assert sorted(every) == ids  # each run claimed by exactly one process: none twice, none lost


def test_claims_of_dead_or_silent_owners_are_taken_over(pg_url, tmp_path):
    store = Store(pg_url, tmp_path)
    store.register({"name": "s"}, [spec("a"), spec("b"), spec("c")])
    for run_id in "abc":
        assert store.claim(run_id) == "pending"
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # the store's clock: naive UTC
    with store.engine.begin() as conn:
        for run_id, owner, heartbeat in [("a", f"{socket.gethostname()}:999999", now),  # this host, pid gone
                                         ("b", "elsewhere:1", now),  # another host, beating
                                         ("c", "elsewhere:1", now - dt.timedelta(days=1))]:  # another host, silent
            conn.execute(sa.text("UPDATE runs SET owner = :owner, heartbeat = :heartbeat WHERE id = :id"),
                         {"owner": owner, "heartbeat": heartbeat, "id": run_id})
    assert [store.claim(run_id) for run_id in "abc"] == ["running", None, "running"]


def test_heartbeats_and_a_takeover_on_postgres(pg_url, tmp_path, monkeypatch):
    """The heartbeat thread beats on PostgreSQL between epochs, and a run another host took over
    refuses this process's epoch and result while its other run takes them."""
    import time
    from mnistlab.store import TakenOver, claims
    monkeypatch.setattr(claims, "HEARTBEAT_EVERY", 0.05)
    store = Store(pg_url, tmp_path)
    store.register({"name": "s"}, [spec("a"), spec("b")])
    assert [store.claim(run_id) for run_id in "ab"] == ["pending", "pending"]
    day_ago = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=1)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET heartbeat = :old"), {"old": day_ago})
    deadline = time.monotonic() + 30
    while any(r["heartbeat"] <= day_ago for r in store.runs()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(r["heartbeat"] > day_ago for r in store.runs())  # beaten, with no epoch committed
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET owner = 'elsewhere:1' WHERE id = 'a'"))
    row = {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "seconds": 1.0}
    with pytest.raises(TakenOver, match="run a: taken over by elsewhere:1"):
        store.add_epoch("a", row)
    with pytest.raises(TakenOver):
        store.finish("a", "done")
    store.add_epoch("b", row)
    store.finish("b", "done")
    runs = {r["id"]: r for r in store.runs()}
    assert (runs["a"]["status"], runs["a"]["owner"], runs["a"]["epochs_done"]) == ("running", "elsewhere:1", 0)
    assert runs["b"]["status"] == "done" and store.history("b")[0]["epoch"] == 1 and store.history("a") == []


def test_heartbeats_are_written_and_judged_by_the_servers_clock(pg_url, tmp_path, monkeypatch):
    """A host whose clock runs an hour fast takes over only the run whose owner went silent."""
    from mnistlab.store import claims
    store = Store(pg_url, tmp_path)
    store.register({"name": "s"}, [spec("a"), spec("b")])
    assert [store.claim(run_id) for run_id in "ab"] == ["pending", "pending"]
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET owner = 'elsewhere:1'"))
        conn.execute(sa.text("UPDATE runs SET heartbeat = heartbeat - interval '1 day' WHERE id = 'b'"))
        server = conn.execute(sa.text("SELECT now() AT TIME ZONE 'UTC'")).scalar()
    assert abs((store.runs()[0]["heartbeat"] - server).total_seconds()) < 60  # naive UTC, as the schema keeps it
    fast = claims.now() + dt.timedelta(hours=1)
    monkeypatch.setattr(claims, "now", lambda: fast)
    assert store.claim("a") is None and store.claim("b") == "running"


def test_two_processes_train_one_study_on_postgres_once(pg_url, write_study, mnist, tmp_path):
    # both open the new, empty database at once: one creates the schema while the other waits for it
    models = {f"m{i}": [f"Dense({16 + i}, activation='relu')", "Dense(10, activation='softmax')"] for i in range(6)}
    path = write_study(tiny_study(name="two", models=models, epochs=2, train_size=1000, test_size=200))
    setup = ("from mnistlab.api import load_study, run\nfrom mnistlab.store import Store\n"
             f"study, store = load_study(sys.argv[1]), Store(sys.argv[2], {str(tmp_path / 'artifacts')!r})")
    trained = race(setup, "o = run(study, store)\nresult = o.trained + o.resumed", [str(path), pg_url], 2, tmp_path)
    store = Store(pg_url, tmp_path / "artifacts")
    assert sorted(trained[0] + trained[1]) == sorted(r["id"] for r in store.runs(study="two"))
    assert trained[0] and trained[1], "both processes should have found work"
    for r in store.runs(study="two"):
        assert r["status"] == "done" and [h["epoch"] for h in store.history(r["id"])] == [1, 2]


class InterruptAfter:
    """A reporter that presses Ctrl-C as epoch ``epoch`` ends (after it is stored)."""

    def __init__(self, epoch):
        self.at = epoch

    def epoch(self, spec, row):
        if row["epoch"] == self.at:
            raise KeyboardInterrupt

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def test_interrupted_run_resumes_on_postgres_and_ends_as_if_never_stopped(pg_url, write_study, mnist, tmp_path):
    text = tiny_study(name="resume", models={"a": MLP}, epochs=3, train_size=1000, test_size=200)
    study = load_study(write_study(text))
    store = Store(pg_url, tmp_path / "artifacts")
    with pytest.raises(KeyboardInterrupt):
        run(study, store, reporter=InterruptAfter(2))
    [stopped] = store.runs(study="resume")
    assert stopped["status"] == "running" and stopped["owner"] is None and stopped["epochs_done"] == 2
    kept = store.history(stopped["id"])
    outcome = run(study, Store(pg_url, tmp_path / "artifacts"))
    assert outcome.resumed == [stopped["id"]] and outcome.trained == []
    history = store.history(stopped["id"])
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[:2] == kept  # nothing lost, nothing repeated
    reference = run(load_study(write_study(text, name="ref.toml")), Store(str(tmp_path / "ref.db")))
    [done] = store.runs(study="resume")
    [ref] = reference.store.runs(study="resume")
    assert done["status"] == "done" and done["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6, abs=1e-7)
    assert done["test_accuracy"] == ref["test_accuracy"]


def version(store):
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT value FROM mnistlab_info WHERE key = 'schema_version'").scalar()


def columns(store, table="runs"):
    return {c["name"] for c in sa.inspect(store.engine).get_columns(table)}


def test_older_schema_is_migrated_in_place_on_postgres(pg_url, tmp_path, monkeypatch):
    old = Store(pg_url, tmp_path)
    old.register({"name": "s"}, [spec("a")])
    old.engine.dispose()
    assert version(old) == str(SCHEMA_VERSION)

    def add_notes(conn):  # what a release with schema 2 would ship
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN notes TEXT")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION, add_notes)
    new = Store(pg_url, tmp_path)
    assert version(new) == str(SCHEMA_VERSION + 1) and "notes" in columns(new)
    assert [r["id"] for r in new.runs(study="s")] == ["a"]  # nothing lost on the way


def test_failed_migration_leaves_postgres_as_it_was(pg_url, tmp_path, monkeypatch):
    Store(pg_url, tmp_path).engine.dispose()

    def half_done(conn):  # DDL is transactional on PostgreSQL: the added column must roll back too
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN notes TEXT")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION, half_done)
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(pg_url, tmp_path)
    monkeypatch.undo()
    store = Store(pg_url, tmp_path)
    assert version(store) == str(SCHEMA_VERSION) and "notes" not in columns(store)


def test_newer_or_foreign_postgres_databases_are_refused(pg_url, tmp_path):
    store = Store(pg_url, tmp_path)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE mnistlab_info SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer mnistlab"):
        Store(pg_url, tmp_path)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE artifacts, epochs, study_runs, runs, studies, mnistlab_info")
        conn.exec_driver_sql("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match=r"a database of something else \(tables: invoices\)"):
        Store(pg_url, tmp_path)
    assert set(sa.inspect(store.engine).get_table_names()) == {"invoices"}  # left untouched
