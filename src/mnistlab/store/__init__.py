"""The results store: studies, runs, every epoch, artifacts. SQLite by default, any SQLAlchemy URL.

>>> store = Store("sqlite:///mnistlab.db")       # or Store.for_study(path), or a postgresql:// URL
>>> store.runs(study="quick")                   # list of dicts, one per run, with status and metrics
>>> Store("mnistlab.db", read_only=True)         # for reading: "no store at PATH" if there is none

Every epoch is committed with its checkpoint as it ends; a run is *claimed* atomically before it
trains, so two processes on one database never train the same run; a claim whose owner died (same
host, pid gone; or no heartbeat for ``STALE_AFTER`` seconds) can be taken over and resumed, and the
process that lost it writes nothing more of that run (``claims.py``).
Weights and checkpoints are safetensors files in an artifacts directory beside the database,
recorded relative to it with their SHA-256 (``files.py``): a store folder can be copied or
moved. A done run whose weights file is missing or changed reads as ``damaged``. This module never
imports torch: arrays arrive as numpy.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlalchemy as sa

from ..errors import DamagedArtifact, StoreError  # noqa: F401 - re-exported: mnistlab.store.StoreError
from .claims import (HEARTBEAT_EVERY, STALE_AFTER, TakenOver, clock, keep_alive, ours, owner_dead,  # noqa: F401
                     owner_id, refuse_if_taken, shown_status)
from .files import Artifacts
from .db import check_integrity, first_line, now, open_engine, sqlite_file, translated, where
from .schema import (METRICS, MIGRATIONS, SCHEMA_LOCK, SCHEMA_VERSION, STATUSES, artifacts, epochs, info_table,  # noqa: F401
                     meta, runs, studies, study_runs)

class Store(Artifacts):
    """A results database plus its artifacts directory. ``read_only``: for commands that only read
    (the store must exist; nothing is created, migrated or locked)."""

    def __init__(self, url: str, artifacts_dir: str | Path | None = None, read_only: bool = False):
        self.url = url  # may hold a password: messages use ``where``
        self.read_only = read_only
        self.database = sqlite_file(url)
        self.engine = open_engine(url, read_only)
        self.where = where(self.engine)
        if artifacts_dir is None:
            base = Path(self.database).with_suffix("") if self.database else Path("mnistlab")
            artifacts_dir = base.parent / f"{base.name}-artifacts"
        self.artifacts_dir = Path(artifacts_dir)
        self._verified: dict[tuple, bool] = {}
        self._init_schema()

    @classmethod
    def for_study(cls, study_path: str | Path, url: str | None = None, read_only: bool = False) -> "Store":
        """``mnistlab.db`` beside the study file, unless a URL is given."""
        return cls(url or f"sqlite:///{Path(study_path).resolve().parent / 'mnistlab.db'}", read_only=read_only)

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with translated(self.where), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        with translated(self.where), self.engine.begin() as conn:
            yield conn

    # -- schema ---------------------------------------------------------------------------
    def _init_schema(self) -> None:
        try:
            tables = set(sa.inspect(self.engine).get_table_names())
        except sa.exc.DatabaseError as exc:
            raise StoreError(f"{self.where}: not a readable database ({first_line(exc)}); "
                             "it was left untouched: pass another --store") from None
        if tables and "mnistlab_info" not in tables:
            raise StoreError(f"{self.where}: a database of something else (tables: {', '.join(sorted(tables)[:5])}); "
                             "it was left untouched: pass another --store")
        if not tables and self.read_only:
            raise StoreError(f"no store at {self.where} (an empty database); `mnistlab run STUDY.toml` makes one")
        if tables:
            check_integrity(self.engine)  # before anything writes to it
        if self.read_only:
            return self._check_version()
        if self.engine.url.get_backend_name() == "sqlite":
            raw = self.engine.raw_connection()  # outside any transaction, as SQLite requires
            try:  # WAL: readers never block the writer; persistent in the file
                raw.driver_connection.execute("PRAGMA journal_mode = WAL")
            except Exception as exc:  # noqa: BLE001 - the sqlite3 module's errors: one line
                raise StoreError(f"{self.where}: cannot write the store ({first_line(exc)})") from None
            finally:
                raw.close()
        with self._begin() as conn:
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
            version = self._version(conn)
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
            conn.execute(info_table.update().where(info_table.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))

    def _check_version(self) -> None:
        with self._connect() as conn:
            self._version(conn)  # an older one is read as it is (its absolute paths: artifact_path)

    def _version(self, conn: sa.Connection) -> int:
        version = int(conn.execute(sa.select(info_table.c.value).where(
            info_table.c.key == "schema_version")).scalar_one())
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.where}: written by a newer mnistlab (schema {version}, this one "
                             f"reads {SCHEMA_VERSION}); upgrade mnistlab")
        return version

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
        with self._begin() as conn:
            values = {"description": study.get("description", ""), "path": study.get("path"),
                      "source": study.get("source"), "updated": now()}
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
        """Atomically take a run to train. Returns the status it had (``damaged``: done, but its weights
        file is missing or changed), or None if it is not ours to train."""
        startable = ["pending"] + (["failed", "diverged"] if retry_failed else [])
        damaged = retry_failed and bool(self.damage([run_id]))  # files: checked outside the transaction
        with self._begin() as conn:
            row = conn.execute(sa.select(runs.c.status, runs.c.owner, runs.c.heartbeat)
                               .where(runs.c.id == run_id)).first()
            if row is None:
                return None
            at = clock(conn)  # the database's: the owner's heartbeats were written by it too
            if row.status == "running" and not owner_dead(row.owner, row.heartbeat, at):
                return None
            if row.status not in startable and row.status != "running" and not (row.status == "done" and damaged):
                return None
            taken = conn.execute(runs.update().where((runs.c.id == run_id) & (runs.c.status == row.status)
                                                     & _same(runs.c.owner, row.owner))
                                 .values(status="running", owner=owner_id(), heartbeat=at,
                                         started=now(), error=None)).rowcount
            if taken != 1:
                return None
        keep_alive(self.engine, self.url)  # an epoch may outlast STALE_AFTER: beat between them
        return "damaged" if row.status == "done" else row.status

    def release(self, run_id: str) -> None:
        """Give a claimed run back unfinished (Ctrl-C): it stays resumable from its checkpoint."""
        with self._begin() as conn:
            conn.execute(runs.update().where((runs.c.id == run_id) & (runs.c.owner == owner_id()))
                         .values(owner=None))

    def add_epoch(self, run_id: str, row: dict[str, float]) -> None:
        """Commit one history row (and the heartbeat); training commits rows with :meth:`commit_epoch`."""
        with self._begin() as conn:
            self._put_epoch(conn, run_id, row)

    def finish(self, run_id: str, status: str, *, params: tuple[int, int, int] | None = None,
               metrics: dict[str, float] | None = None, seconds: float | None = None,
               error: str | None = None, environment: dict[str, Any] | None = None) -> None:
        assert status in STATUSES
        values: dict[str, Any] = {"status": status, "finished": now(), "error": error, "owner": None}
        if params:
            values.update(params=params[0], trainable=params[1], non_trainable=params[2])
        values.update({k: _finite(v) for k, v in (metrics or {}).items() if k in METRICS})
        if seconds is not None:
            values["seconds"] = seconds
        if environment is not None:
            values["environment"] = environment
        with self._begin() as conn:
            if not conn.execute(runs.update().where((runs.c.id == run_id) & ours()).values(**values)).rowcount:
                refuse_if_taken(conn, run_id)

    def reset_epochs(self, run_id: str, keep: int) -> None:
        """Forget history rows after epoch ``keep`` (a resumed run continues from its checkpoint)."""
        self.restore_epochs(run_id, [], keep)

    def restore_epochs(self, run_id: str, history: list[dict[str, float]], keep: int) -> int:
        """Make the run's history rows 1..``keep``: forget later ones, and write those of ``history``
        (a checkpoint's own) that are missing (a store written before epochs and checkpoints were
        committed together). Returns how many rows were restored."""
        with self._begin() as conn:
            conn.execute(epochs.delete().where((epochs.c.run_id == run_id) & (epochs.c.epoch > keep)))
            have = {e for (e,) in conn.execute(sa.select(epochs.c.epoch).where(epochs.c.run_id == run_id))}
            missing = [r for r in history if int(r["epoch"]) <= keep and int(r["epoch"]) not in have]
            for row in missing:
                self._put_epoch(conn, run_id, row)
            conn.execute(runs.update().where(runs.c.id == run_id).values(epochs_done=keep))
        return len(missing)

    # -- reading --------------------------------------------------------------------------
    def studies(self) -> list[dict[str, Any]]:
        """Every study with its current runs counted by status as listings show them (``damaged``,
        ``interrupted`` among them: :func:`shown_status`)."""
        with self._connect() as conn:
            members = conn.execute(sa.select(study_runs.c.study, runs.c.id, runs.c.status, runs.c.owner,
                                             runs.c.heartbeat).join(runs, runs.c.id == study_runs.c.run_id)
                                   .where(study_runs.c.current.is_(True))).mappings().all()
            rows = conn.execute(sa.select(studies).order_by(studies.c.name)).mappings().all()
        damaged = self.damage(sorted({m["id"] for m in members if m["status"] == "done"}))
        by_study: dict[str, dict[str, int]] = {}
        for member in members:
            name, status = member["study"], "damaged" if member["id"] in damaged else shown_status(member)
            by_study.setdefault(name, {})[status] = by_study.setdefault(name, {}).get(status, 0) + 1
        return [dict(r, counts=by_study.get(r["name"], {})) for r in rows]

    def study(self, name: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.name == name)).mappings().first()
        return dict(row) if row else None

    def runs(self, study: str | None = None, ids: Iterable[str] | None = None,
             current: bool = True) -> list[dict[str, Any]]:
        """Runs as dicts (spec, status, metrics, model, point, repeat), in study order. A done run
        whose weights file is missing or changed has status ``damaged``, and ``damage`` says why."""
        columns = [runs, study_runs.c.study, study_runs.c.model, study_runs.c.point,
                   study_runs.c.repeat, study_runs.c.position]
        query = sa.select(*columns).join(study_runs, study_runs.c.run_id == runs.c.id)
        if study is not None:
            query = query.where(study_runs.c.study == study)
        if current:
            query = query.where(study_runs.c.current.is_(True))
        if ids is not None:
            query = query.where(runs.c.id.in_(list(ids)))
        with self._connect() as conn:
            rows = conn.execute(query.order_by(study_runs.c.study, study_runs.c.position)).mappings().all()
        seen, out = set(), []
        for r in rows:
            if study is None and r["id"] in seen:
                continue
            seen.add(r["id"])
            out.append(dict(r, damage=None))
        damaged = self.damage([r["id"] for r in out if r["status"] == "done"])
        for r in out:
            if r["id"] in damaged:
                r.update(status="damaged", damage=damaged[r["id"]])
        return out

    def resumable(self, study: str) -> list[dict[str, Any]]:
        """The study's runs left ``running`` that the next ``mnistlab run`` resumes: released (Ctrl-C),
        this process's own, or of a process that is gone."""
        return [r for r in self.runs(study=study) if r["status"] == "running"
                and (r["owner"] == owner_id() or owner_dead(r["owner"], r["heartbeat"]))]

    def history(self, run_id: str) -> list[dict[str, float]]:
        with self._connect() as conn:
            rows = conn.execute(sa.select(epochs).where(epochs.c.run_id == run_id)
                                .order_by(epochs.c.epoch)).mappings().all()
        return [{k: v for k, v in r.items() if k != "run_id"} for r in rows]

    def histories(self, run_ids: Iterable[str]) -> dict[str, list[dict[str, float]]]:
        ids = list(run_ids)
        out: dict[str, list[dict[str, float]]] = {i: [] for i in ids}
        with self._connect() as conn:
            for r in conn.execute(sa.select(epochs).where(epochs.c.run_id.in_(ids))
                                  .order_by(epochs.c.run_id, epochs.c.epoch)).mappings():
                out[r["run_id"]].append({k: v for k, v in r.items() if k != "run_id"})
        return out

    def resolve(self, prefix: str) -> str:
        """A full run id from an unambiguous prefix, like git's abbreviated hashes (hexadecimal)."""
        if len(prefix) < 4:
            raise StoreError(f"run id {prefix!r} is too short; give at least 4 characters")
        if not re.fullmatch(r"[0-9a-fA-F]+", prefix):
            raise StoreError(f"{prefix!r} is not a run id: ids are hexadecimal (0-9, a-f), as `mnistlab ls STUDY` shows")
        with self._connect() as conn:  # autoescape: never a LIKE pattern, whatever the id holds
            found = [r for (r,) in conn.execute(sa.select(runs.c.id).where(
                runs.c.id.startswith(prefix.lower(), autoescape=True)))]
        if not found:
            raise StoreError(f"no run with id {prefix!r} in {self.where}; `mnistlab ls` lists them")
        if len(found) > 1:
            raise StoreError(f"run id {prefix!r} is ambiguous: {', '.join(sorted(found)[:5])}; give more characters")
        return found[0]


def _same(column: sa.Column, value: Any):
    return column.is_(None) if value is None else column == value


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)
