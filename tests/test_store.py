"""The results store: schema, claims, epochs, artifacts, foreign files; and statistics over repeats."""

import math
import sqlite3

import numpy as np
import pytest

from mnistlab.report.stats import summarize
from mnistlab.report.table import comparison, render
from mnistlab.store import SCHEMA_VERSION, Store, StoreError


def spec(run_id, model="m", repeat=0, point=""):
    return {"id": run_id, "model": model, "repeat": repeat, "point": point, "sweep": {}, "layers": ["Dense(10)"],
            "dataset": "mnist", "epochs": 2, "batch_size": 128, "optimizer": "adam()", "loss": "x",
            "validation": "test", "train_size": None, "test_size": None, "seed": repeat, "study": "s"}


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path}/db.sqlite")


def finish(store, run_id, acc):
    assert store.claim(run_id) == "pending"
    store.add_epoch(run_id, {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 1})
    store.finish(run_id, "done", params=(10, 10, 0), metrics={"test_accuracy": acc, "test_loss": 1 - acc}, seconds=2.0)


def test_summarize_mean_std_ci():
    stat = summarize([0.97, 0.98, 0.975])
    assert stat.n == 3 and math.isclose(stat.mean, 0.975) and math.isclose(stat.std, 0.005)
    assert math.isclose(stat.ci95[1] - stat.mean, 4.303 * 0.005 / math.sqrt(3))
    assert summarize([0.9]).text() == "0.9000" and summarize([0.9]).std is None
    assert summarize([0.5, None, float("nan")]).n == 1


def test_repeated_groups_do_not_leak_into_each_other(store):
    # seed 002 summed repeats into never-reset totals and printed accuracies above 1
    store.register({"name": "s"}, [spec(f"r{i}", model=f"m{i // 3}", repeat=i % 3) for i in range(9)])
    accs = [0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99]
    for i, acc in enumerate(accs):
        finish(store, f"r{i}", acc)
    rows = comparison(store, "s")
    means = [r.stats["test_accuracy"].mean for r in rows]
    assert means == pytest.approx([np.mean(accs[0:3]), np.mean(accs[3:6]), np.mean(accs[6:9])])
    assert all(0 <= m <= 1 for m in means)
    assert [r.stats["test_accuracy"].n for r in rows] == [3, 3, 3]
    assert rows[0].stats["test_accuracy"].std == pytest.approx(np.std(accs[0:3], ddof=1))
    assert "0.9200 ± 0.0200 (n=3)" in render(rows, "markdown")
    assert '"ci95_low"' in render(rows, "json") and "test_accuracy_ci95_high" in render(rows, "csv")


def test_claims_are_exclusive_and_release_makes_resumable(store):
    store.register({"name": "s"}, [spec("a")])
    assert store.claim("a") == "pending"
    assert store.claim("a") is None  # our own live process holds it
    store.release("a")
    assert store.claim("a") == "running"  # owner gone: resumable
    store.finish("a", "failed", error="boom")
    assert store.claim("a") is None
    assert store.claim("a", retry_failed=True) == "failed"


def test_dead_owner_is_taken_over(store):
    store.register({"name": "s"}, [spec("a")])
    store.claim("a")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET owner = ? WHERE id = 'a'", (f"{__import__('socket').gethostname()}:999999",))
    assert store.claim("a") == "running"


def test_a_host_whose_clock_is_off_judges_heartbeats_by_the_databases_clock(store, monkeypatch):
    """Each host judged another's heartbeat by Python's clock: one running an hour fast took over a run
    whose owner had beaten a moment ago. The judgement is the database's clock's (SQLite's runs in
    this process; PostgreSQL's is the server's, where hosts' clocks really differ: test_postgres.py)."""
    import datetime as dt
    from mnistlab.store import claims
    store.register({"name": "s"}, [spec("a"), spec("b")])
    assert [store.claim(r) for r in "ab"] == ["pending", "pending"]  # beaten just now
    with store.engine.begin() as conn:  # both held by another host; b's owner went silent long ago
        conn.exec_driver_sql("UPDATE runs SET owner = 'elsewhere:1'")
        conn.exec_driver_sql("UPDATE runs SET heartbeat = '2000-01-01 00:00:00.000000' WHERE id = 'b'")
    fast = claims.now() + dt.timedelta(hours=1)
    monkeypatch.setattr(claims, "now", lambda: fast)  # this host's clock, an hour ahead
    assert store.claim("a") is None and store.claim("b") == "running"
    (a, b) = store.runs()
    assert a["owner"] == "elsewhere:1" and b["heartbeat"] < fast - dt.timedelta(minutes=30)  # written by the database's clock


def test_epochs_and_artifacts_roundtrip(store):
    store.register({"name": "s"}, [spec("abcd1234")])
    finish(store, "abcd1234", 0.9)
    assert store.history("abcd1234")[0]["val_accuracy"] == 0.4
    weights = {"dense_1.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    store.save_arrays("abcd1234", "weights", weights, metadata={"k": "v"})
    arrays, meta = store.load_arrays("abcd1234", "weights")
    assert np.array_equal(arrays["dense_1.weight"], weights["dense_1.weight"]) and meta["k"] == "v"
    store.save_json("abcd1234", "confusion_test", [[1, 2], [3, 4]])
    assert store.load_json("abcd1234", "confusion_test") == [[1, 2], [3, 4]]
    assert store.resolve("abcd") == "abcd1234"
    with pytest.raises(StoreError, match="no run with id"):
        store.resolve("ffff")


def test_ambiguous_prefix(store):
    store.register({"name": "s"}, [spec("abcd1111"), spec("abcd2222")])
    with pytest.raises(StoreError, match="ambiguous"):
        store.resolve("abcd")


def test_re_registering_marks_dropped_runs(store):
    store.register({"name": "s"}, [spec("a"), spec("b")])
    store.register({"name": "s"}, [spec("b"), spec("c")])
    assert [r["id"] for r in store.runs(study="s")] == ["b", "c"]
    assert {r["id"] for r in store.runs(study="s", current=False)} == {"a", "b", "c"}


def test_wal_mode_and_schema_version(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("SELECT value FROM mnistlab_info WHERE key='schema_version'").scalar() == str(SCHEMA_VERSION)


def test_corrupt_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a readable database.*left untouched"):
        Store(str(path))
    assert path.read_bytes() == before


def test_foreign_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="a database of something else \\(tables: invoices\\)"):
        Store(str(path))
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path):
    store = Store(str(tmp_path / "db.sqlite"))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE mnistlab_info SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer mnistlab"):
        Store(str(tmp_path / "db.sqlite"))


def test_older_schema_is_migrated_in_place(tmp_path, monkeypatch):
    import mnistlab.store as store_module
    path = tmp_path / "db.sqlite"
    old = Store(str(path))
    old.register({"name": "s"}, [spec("a")])
    old.engine.dispose()

    def add_notes(conn):  # what a release with the next schema would ship
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN notes TEXT")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION, add_notes)
    new = Store(str(path))
    with new.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM mnistlab_info WHERE key='schema_version'").scalar() == str(SCHEMA_VERSION + 1)
        assert "notes" in [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(runs)")]
    assert [r["id"] for r in new.runs(study="s")] == ["a"]  # nothing lost on the way
