"""The store on PostgreSQL: set MNISTLAB_TEST_POSTGRES=postgresql+psycopg://user@host/db to run."""

import os
import uuid

import pytest

from conftest import MLP, tiny_study
from mnistlab.api import load_study, run
from mnistlab.report.table import comparison
from mnistlab.store import Store

URL = os.environ.get("MNISTLAB_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="set MNISTLAB_TEST_POSTGRES to a PostgreSQL URL to test it")


def test_study_on_postgres_skips_done_runs_and_tables(write_study, mnist, tmp_path):
    name = f"pg-{uuid.uuid4().hex[:8]}"  # the database outlives the test: a fresh study each time
    path = write_study(tiny_study(name=name, models={"a": MLP, "b": ["Dense(10, activation='softmax')"]},
                                  epochs=1, seed=uuid.uuid4().int % 1_000_000))
    store = Store(URL, tmp_path / "artifacts")
    assert len(run(load_study(path), store).trained) == 2
    assert len(run(load_study(path), Store(URL, tmp_path / "artifacts")).skipped) == 2
    rows = comparison(store, name)
    assert [r.status for r in rows] == ["done", "done"] and rows[0].stats["test_accuracy"].mean > 0.5
    assert store.load_json(rows[0].run_ids[0], "confusion_test") is not None
