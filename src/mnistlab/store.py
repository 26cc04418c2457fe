"""The results store: studies, runs, every epoch, artifacts. SQLite by default, any SQLAlchemy URL.

>>> store = Store("sqlite:///mnistlab.db")       # or Store.for_study(path), or a postgresql:// URL
>>> store.runs(study="quick")                   # list of dicts, one per run, with status and metrics

Every epoch is committed as it ends; a run is *claimed* atomically before it trains, so two
processes on one database never train the same run; a claim whose owner died (same host, pid
gone; or no heartbeat for ``STALE_AFTER`` seconds) can be taken over and resumed. Weights and
checkpoints are safetensors files in an artifacts directory beside the database. This module
never imports torch: arrays arrive as numpy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import sqlalchemy as sa
from safetensors.numpy import load_file, save_file

from .errors import StoreError

SCHEMA_VERSION = 1
SCHEMA_LOCK = int.from_bytes(b"mnistlab", "big") >> 1  # PostgreSQL advisory lock key (a bigint) of schema changes
STALE_AFTER = 600  # seconds without a heartbeat before another host may take a running run over
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
    sa.Column("kind", sa.String(32), primary_key=True),  # weights, checkpoint, confusion_test, …
    sa.Column("path", sa.Text), sa.Column("data", sa.JSON), sa.Column("sha256", sa.String(64)))

MIGRATIONS: dict[int, Any] = {}  # version -> function(connection) upgrading it to version + 1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: str | None, heartbeat: dt.datetime | None) -> bool:
    if not owner:
        return True
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False
    return heartbeat is None or (_now() - heartbeat).total_seconds() > STALE_AFTER


class Store:
    """A results database plus its artifacts directory."""

    def __init__(self, url: str, artifacts_dir: str | Path | None = None):
        self.url = url
        self.engine = _engine(url)
        if artifacts_dir is None:
            database = self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
            base = Path(database).with_suffix("") if database and database != ":memory:" else Path("mnistlab")
            artifacts_dir = base.parent / f"{base.name}-artifacts"
        self.artifacts_dir = Path(artifacts_dir)
        self._init_schema()

    @classmethod
    def for_study(cls, study_path: str | Path, url: str | None = None) -> "Store":
        """``mnistlab.db`` beside the study file, unless a URL is given."""
        return cls(url or f"sqlite:///{Path(study_path).resolve().parent / 'mnistlab.db'}")

    # -- schema ---------------------------------------------------------------------------
    def _init_schema(self) -> None:
        where = self.engine.url.render_as_string(hide_password=True)
        try:
            tables = set(sa.inspect(self.engine).get_table_names())
        except sa.exc.DatabaseError as exc:
            raise StoreError(f"{where}: not a readable database ({_first_line(exc)}); "
                             "it was left untouched: pass another --store") from None
        if tables and "mnistlab_info" not in tables:
            raise StoreError(f"{where}: a database of something else (tables: {', '.join(sorted(tables)[:5])}); "
                             "it was left untouched: pass another --store")
        if self.engine.url.get_backend_name() == "sqlite":
            raw = self.engine.raw_connection()  # outside any transaction, as SQLite requires
            try:  # WAL: readers never block the writer; persistent in the file
                raw.driver_connection.execute("PRAGMA journal_mode = WAL")
            finally:
                raw.close()
        with self.engine.begin() as conn:
            # processes opening a new store at once: one creates (or migrates) it, the others wait and
            # see it done (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level advisory lock)
            if self.engine.url.get_backend_name() == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            tables = set(sa.inspect(conn).get_table_names())
            if not tables:
                meta.create_all(conn)
                conn.execute(info_table.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                                                   {"key": "application", "value": "mnistlab"}])
                return
            version = int(conn.execute(sa.select(info_table.c.value).where(
                info_table.c.key == "schema_version")).scalar_one())
            if version > SCHEMA_VERSION:
                raise StoreError(f"{where}: written by a newer mnistlab (schema {version}, this one "
                                 f"reads {SCHEMA_VERSION}); upgrade mnistlab")
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
            conn.execute(info_table.update().where(info_table.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))

    # -- studies and their runs -------------------------------------------------------------
    def register(self, study: dict[str, Any], specs: Iterable[dict[str, Any]]) -> None:
        """Record a study and its runs (specs as from ``RunSpec.to_json()`` plus ``id``); new runs are pending."""
        specs = list(specs)
        for attempt in range(5):  # another process may register the same runs at the same moment
            try:
                return self._register(study, specs)
            except sa.exc.IntegrityError:
                if attempt == 4:
                    raise

    def _register(self, study: dict[str, Any], specs: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            values = {"description": study.get("description", ""), "path": study.get("path"),
                      "source": study.get("source"), "updated": _now()}
            if conn.execute(sa.select(studies.c.name).where(studies.c.name == study["name"])).first():
                conn.execute(studies.update().where(studies.c.name == study["name"]).values(**values))
            else:
                conn.execute(studies.insert().values(name=study["name"], **values))
            known = {r for (r,) in conn.execute(sa.select(runs.c.id).where(runs.c.id.in_([s["id"] for s in specs])))}
            new = [{"id": s["id"], "spec": s, "status": "pending", "epochs_done": 0} for s in specs if s["id"] not in known]
            if new:
                conn.execute(runs.insert(), new)
            conn.execute(study_runs.update().where(study_runs.c.study == study["name"]).values(current=False))
            for position, s in enumerate(specs):
                row = {"position": position, "model": s["model"], "point": s.get("point", ""),
                       "repeat": s.get("repeat", 0), "current": True}
                key = (study_runs.c.study == study["name"]) & (study_runs.c.run_id == s["id"])
                if conn.execute(sa.select(study_runs.c.run_id).where(key)).first():
                    conn.execute(study_runs.update().where(key).values(**row))
                else:
                    conn.execute(study_runs.insert().values(study=study["name"], run_id=s["id"], **row))

    def claim(self, run_id: str, retry_failed: bool = False) -> str | None:
        """Atomically take a run to train. Returns the status it had, or None if it is not ours to train."""
        startable = ["pending"] + (["failed", "diverged"] if retry_failed else [])
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(runs.c.status, runs.c.owner, runs.c.heartbeat)
                               .where(runs.c.id == run_id)).first()
            if row is None:
                return None
            if row.status == "running" and not _owner_dead(row.owner, row.heartbeat):
                return None
            if row.status not in startable and row.status != "running":
                return None
            taken = conn.execute(runs.update().where((runs.c.id == run_id) & (runs.c.status == row.status)
                                                     & _same(runs.c.owner, row.owner))
                                 .values(status="running", owner=owner_id(), heartbeat=_now(),
                                         started=_now(), error=None)).rowcount
            return row.status if taken == 1 else None

    def release(self, run_id: str) -> None:
        """Give a claimed run back unfinished (Ctrl-C): it stays resumable from its checkpoint."""
        with self.engine.begin() as conn:
            conn.execute(runs.update().where((runs.c.id == run_id) & (runs.c.owner == owner_id()))
                         .values(owner=None))

    def add_epoch(self, run_id: str, row: dict[str, float]) -> None:
        """Commit one history row (and the heartbeat) as the epoch ends."""
        values = {k: row.get(k) for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")}
        with self.engine.begin() as conn:
            conn.execute(epochs.delete().where((epochs.c.run_id == run_id) & (epochs.c.epoch == row["epoch"])))
            conn.execute(epochs.insert().values(run_id=run_id, epoch=int(row["epoch"]), **values))
            conn.execute(runs.update().where(runs.c.id == run_id)
                         .values(epochs_done=int(row["epoch"]), heartbeat=_now()))

    def finish(self, run_id: str, status: str, *, params: tuple[int, int, int] | None = None,
               metrics: dict[str, float] | None = None, seconds: float | None = None,
               error: str | None = None, environment: dict[str, Any] | None = None) -> None:
        assert status in STATUSES
        values: dict[str, Any] = {"status": status, "finished": _now(), "error": error, "owner": None}
        if params:
            values.update(params=params[0], trainable=params[1], non_trainable=params[2])
        values.update({k: _finite(v) for k, v in (metrics or {}).items() if k in METRICS})
        if seconds is not None:
            values["seconds"] = seconds
        if environment is not None:
            values["environment"] = environment
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def reset_epochs(self, run_id: str, keep: int) -> None:
        """Forget history rows after epoch ``keep`` (a resumed run continues from its checkpoint)."""
        with self.engine.begin() as conn:
            conn.execute(epochs.delete().where((epochs.c.run_id == run_id) & (epochs.c.epoch > keep)))
            conn.execute(runs.update().where(runs.c.id == run_id).values(epochs_done=keep))

    # -- artifacts ------------------------------------------------------------------------
    def save_arrays(self, run_id: str, kind: str, arrays: dict[str, np.ndarray],
                    metadata: dict[str, str] | None = None) -> Path:
        """Write a safetensors file atomically and record it."""
        path = self.artifacts_dir / run_id / f"{kind}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=metadata)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, path)
        self._put_artifact(run_id, kind, path=str(path), sha256=digest)
        return path

    def load_arrays(self, run_id: str, kind: str) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
        row = self._artifact(run_id, kind)
        if row is None or not row.path or not Path(row.path).exists():
            return None
        from safetensors import safe_open
        with safe_open(row.path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
        return load_file(row.path), metadata

    def save_json(self, run_id: str, kind: str, data: Any) -> None:
        self._put_artifact(run_id, kind, data=data)

    def load_json(self, run_id: str, kind: str) -> Any:
        row = self._artifact(run_id, kind)
        return None if row is None else row.data

    def _put_artifact(self, run_id: str, kind: str, **values: Any) -> None:
        key = (artifacts.c.run_id == run_id) & (artifacts.c.kind == kind)
        with self.engine.begin() as conn:
            conn.execute(artifacts.delete().where(key))
            conn.execute(artifacts.insert().values(run_id=run_id, kind=kind, **values))

    def _artifact(self, run_id: str, kind: str):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(artifacts).where((artifacts.c.run_id == run_id)
                                                           & (artifacts.c.kind == kind))).first()

    def drop_artifact(self, run_id: str, kind: str) -> None:
        row = self._artifact(run_id, kind)
        if row is not None and row.path:
            Path(row.path).unlink(missing_ok=True)
        with self.engine.begin() as conn:
            conn.execute(artifacts.delete().where((artifacts.c.run_id == run_id) & (artifacts.c.kind == kind)))

    # -- reading --------------------------------------------------------------------------
    def studies(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            counts = sa.select(study_runs.c.study, runs.c.status, sa.func.count().label("n")).join(
                runs, runs.c.id == study_runs.c.run_id).where(study_runs.c.current.is_(True)).group_by(
                study_runs.c.study, runs.c.status)
            by_study: dict[str, dict[str, int]] = {}
            for name, status, n in conn.execute(counts):
                by_study.setdefault(name, {})[status] = n
            rows = conn.execute(sa.select(studies).order_by(studies.c.name)).mappings().all()
        return [dict(r, counts=by_study.get(r["name"], {})) for r in rows]

    def study(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.name == name)).mappings().first()
        return dict(row) if row else None

    def runs(self, study: str | None = None, ids: Iterable[str] | None = None,
             current: bool = True) -> list[dict[str, Any]]:
        """Runs as dicts (spec, status, metrics, model, point, repeat), in study order."""
        columns = [runs, study_runs.c.study, study_runs.c.model, study_runs.c.point,
                   study_runs.c.repeat, study_runs.c.position]
        query = sa.select(*columns).join(study_runs, study_runs.c.run_id == runs.c.id)
        if study is not None:
            query = query.where(study_runs.c.study == study)
        if current:
            query = query.where(study_runs.c.current.is_(True))
        if ids is not None:
            query = query.where(runs.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(study_runs.c.study, study_runs.c.position)).mappings().all()
        seen, out = set(), []
        for r in rows:
            if study is None and r["id"] in seen:
                continue
            seen.add(r["id"])
            out.append(dict(r))
        return out

    def history(self, run_id: str) -> list[dict[str, float]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(epochs).where(epochs.c.run_id == run_id)
                                .order_by(epochs.c.epoch)).mappings().all()
        return [{k: v for k, v in r.items() if k != "run_id"} for r in rows]

    def histories(self, run_ids: Iterable[str]) -> dict[str, list[dict[str, float]]]:
        ids = list(run_ids)
        out: dict[str, list[dict[str, float]]] = {i: [] for i in ids}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(epochs).where(epochs.c.run_id.in_(ids))
                                  .order_by(epochs.c.run_id, epochs.c.epoch)).mappings():
                out[r["run_id"]].append({k: v for k, v in r.items() if k != "run_id"})
        return out

    def resolve(self, prefix: str) -> str:
        """A full run id from an unambiguous prefix, like git's abbreviated hashes."""
        if len(prefix) < 4:
            raise StoreError(f"run id {prefix!r} is too short; give at least 4 characters")
        with self.engine.connect() as conn:
            found = [r for (r,) in conn.execute(sa.select(runs.c.id).where(runs.c.id.startswith(prefix)))]
        if not found:
            raise StoreError(f"no run with id {prefix!r} in {self.url}; `mnistlab ls` lists them")
        if len(found) > 1:
            raise StoreError(f"run id {prefix!r} is ambiguous: {', '.join(sorted(found)[:5])}; give more characters")
        return found[0]


def _same(column: sa.Column, value: Any):
    return column.is_(None) if value is None else column == value


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]


def _engine(url: str) -> sa.Engine:
    if "://" not in url:  # a bare path means an SQLite file
        url = f"sqlite:///{Path(url).resolve()}"
    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot open store {url!r}: {exc}") from None
    if engine.url.get_backend_name() == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            if Path(database).is_dir():
                raise StoreError(f"{database}: is a directory; --store wants a database file or URL")
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL is set once the file is known to be ours
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout = 60000")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # take the write lock up front: a deferred read-then-write
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # fails at once under WAL when another wrote between
    return engine
