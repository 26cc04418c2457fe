"""Who trains a run: claims, their owners and heartbeats.

A process claims a run before it trains it (``Store.claim``) and becomes its owner (``host:pid``).
On the owner's host a claim is free again once that pid is gone; from another host (a PostgreSQL
store, or a database on a shared disk) once its heartbeat is older than ``STALE_AFTER``. Every
committed epoch beats, and so does a thread of the owning process every ``HEARTBEAT_EVERY`` seconds
(:func:`keep_alive`): an epoch longer than ``STALE_AFTER`` (a big CNN on one CPU thread) no longer
reads as a dead owner. A process that was paused or cut off for that long may find its run taken
over: its next epoch or result is refused (:class:`TakenOver`), never written over the new owner's.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

import sqlalchemy as sa

from ..errors import StoreError
from .db import now
from .schema import runs

STALE_AFTER = 600  # seconds without a heartbeat before another host may take a running run over
HEARTBEAT_EVERY = 60.0  # seconds between the heartbeats a training process writes for its runs
FAILURES = 3  # heartbeats failed in a row (the database unreachable) before the thread gives up

log = logging.getLogger(__name__)


class TakenOver(StoreError):
    """This process's run was claimed by another one (its heartbeat had gone stale): stop, write nothing."""


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def clock(conn: sa.Connection) -> dt.datetime:
    """The database's own time, naive UTC as stored: on PostgreSQL the server's, so heartbeats are
    written and judged by one clock and hosts whose clocks disagree still agree on which are stale.
    SQLite runs in this process (its clock is this host's); other databases: this host's clock."""
    backend = conn.engine.url.get_backend_name()
    if backend == "sqlite":
        return dt.datetime.fromisoformat(conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar())
    if backend == "postgresql":
        return conn.exec_driver_sql("SELECT (now() AT TIME ZONE 'UTC')").scalar()
    return now()


def owner_dead(owner: str | None, heartbeat, at: dt.datetime | None = None) -> bool:
    """Whether a claim's owner (``host:pid``) is gone: its run is free to resume. On this host, by its
    pid; from another, by its heartbeat's age at ``at`` (the database's :func:`clock`; default: ours)."""
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
    return heartbeat is None or ((at or now()) - heartbeat).total_seconds() > STALE_AFTER


def shown_status(run: dict) -> str:
    """A run's status as listings show it: ``interrupted`` for one left ``running`` by a process that
    is gone (killed, or Ctrl-C: it resumes on the next ``mnistlab run``), else its stored status."""
    if run["status"] == "running" and owner_dead(run.get("owner"), run.get("heartbeat")):
        return "interrupted"
    return run["status"]


def ours():
    """The runs this process may write: its own claims, and runs nobody holds (released, or never
    claimed: tests and imports write those)."""
    return runs.c.owner.is_(None) | (runs.c.owner == owner_id())


def refuse_if_taken(conn: sa.Connection, run_id: str) -> None:
    """After a write to ``run_id`` limited to :func:`ours` changed nothing: raise TakenOver if another
    process holds the run now (a run that does not exist is left to the caller's own checks)."""
    owner = conn.execute(sa.select(runs.c.owner).where(runs.c.id == run_id)).scalar()
    if owner is not None and owner != owner_id():
        raise TakenOver(f"run {run_id}: taken over by {owner}, since this process ({owner_id()}) wrote no heartbeat "
                        f"for over {STALE_AFTER // 60} min (paused, or cut off from the store); this process "
                        "stops training it and writes nothing more of it")


_lock = threading.Lock()
_beating: dict[tuple[str, int], threading.Thread] = {}  # (store URL, pid) -> its heartbeat thread


def _after_fork() -> None:  # a forked worker inherits neither the threads nor, safely, a held lock
    global _lock
    _lock = threading.Lock()
    _beating.clear()


if hasattr(os, "register_at_fork"):  # POSIX; Windows does not fork
    os.register_at_fork(after_in_child=_after_fork)


def keep_alive(engine: sa.Engine, url: str) -> None:
    """Make sure a thread beats for this process's claims in ``engine``'s database (called on each
    claim). It ends on its own once the process holds no running run there. In-memory SQLite
    databases are this process's alone: no other process can take a run over, so none beats."""
    if engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return
    key = (url, os.getpid())
    with _lock:
        if key in _beating:
            return
        thread = threading.Thread(target=_beat, args=(engine, key), name="mnistlab-heartbeat", daemon=True)
        _beating[key] = thread
        thread.start()


def beat(engine: sa.Engine) -> int:
    """Refresh the heartbeat of every run this process owns and trains; returns how many."""
    with engine.begin() as conn:
        return conn.execute(runs.update().where((runs.c.owner == owner_id()) & (runs.c.status == "running"))
                            .values(heartbeat=clock(conn))).rowcount


def _beat(engine: sa.Engine, key: tuple[str, int]) -> None:
    failures = 0
    while True:
        time.sleep(HEARTBEAT_EVERY)
        with _lock:  # a claim committed before this beat is counted by it; one after it starts a new thread
            try:
                held, failures = beat(engine), 0
            except Exception as exc:  # noqa: BLE001 - the database is unreachable for now: epochs still beat
                failures += 1
                log.info("heartbeat of %s failed (%s of %s): %s", engine.url.render_as_string(hide_password=True),
                         failures, FAILURES, exc)
                held = failures < FAILURES
            if not held:
                _beating.pop(key, None)
                return
