"""The store's tables, its schema version, and the migrations that bring an older store up to it.

A store records its schema version in ``mnistlab_info``; opening an older store for writing runs
``MIGRATIONS[v]`` for each version ``v`` below :data:`SCHEMA_VERSION`, in one transaction.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Callable

import sqlalchemy as sa

SCHEMA_LOCK = int.from_bytes(b"mnistlab", "big") >> 1  # PostgreSQL advisory lock key (a bigint) of schema changes
SCHEMA_VERSION = 2  # 2: artifact paths relative to the artifacts directory (a store can be copied or moved)
STATUSES = ("pending", "running", "done", "diverged", "failed")
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")

meta = sa.MetaData()
info_table = sa.Table("mnistlab_info", meta, sa.Column("key", sa.String(64), primary_key=True),
                      sa.Column("value", sa.Text, nullable=False))
studies = sa.Table(
    "studies", meta,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("description", sa.Text, default=""),
    sa.Column("path", sa.Text), sa.Column("source", sa.Text),  # the study file as it was last run
    sa.Column("updated", sa.DateTime))
runs = sa.Table(
    "runs", meta,
    sa.Column("id", sa.String(16), primary_key=True),  # hash of the resolved spec
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("owner", sa.String(200)), sa.Column("heartbeat", sa.DateTime),  # who trains it now
    sa.Column("params", sa.Integer), sa.Column("trainable", sa.Integer), sa.Column("non_trainable", sa.Integer),
    *(sa.Column(m, sa.Float) for m in METRICS),
    sa.Column("epochs_done", sa.Integer, default=0), sa.Column("seconds", sa.Float),
    sa.Column("error", sa.Text), sa.Column("environment", sa.JSON),
    sa.Column("started", sa.DateTime), sa.Column("finished", sa.DateTime))
study_runs = sa.Table(  # a run can belong to several studies (same spec, same id)
    "study_runs", meta,
    sa.Column("study", sa.String(200), sa.ForeignKey("studies.name"), primary_key=True),
    sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False), sa.Column("model", sa.String(200)),
    sa.Column("point", sa.Text), sa.Column("repeat", sa.Integer),
    sa.Column("current", sa.Boolean, default=True))  # False: dropped from the study file since
epochs = sa.Table(
    "epochs", meta,
    sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("loss", sa.Float), sa.Column("accuracy", sa.Float),
    sa.Column("val_loss", sa.Float), sa.Column("val_accuracy", sa.Float), sa.Column("seconds", sa.Float))
artifacts = sa.Table(
    "artifacts", meta,
    sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),  # weights, checkpoint, checkpoint_previous, confusion_test, …
    # files: "<run_id>/<name>.safetensors", relative to the artifacts directory (schema 1: absolute)
    sa.Column("path", sa.Text), sa.Column("data", sa.JSON), sa.Column("sha256", sa.String(64)))


def relative_paths(conn: sa.Connection) -> None:
    """1 -> 2: ``<anything>/<run_id>/<file>`` becomes ``<run_id>/<file>``; other paths are left as they are."""
    rows = conn.execute(sa.select(artifacts.c.run_id, artifacts.c.kind, artifacts.c.path)
                        .where(artifacts.c.path.is_not(None))).all()
    for run_id, kind, path in rows:
        parts = PurePath(path).parts
        if len(parts) >= 2 and parts[-2] == run_id and PurePath(path).is_absolute():
            conn.execute(artifacts.update().where((artifacts.c.run_id == run_id) & (artifacts.c.kind == kind))
                         .values(path=f"{run_id}/{parts[-1]}"))


# version -> function(connection) upgrading it to version + 1
MIGRATIONS: dict[int, Callable[[sa.Connection], Any]] = {1: relative_paths}
