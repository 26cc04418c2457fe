"""Opening a store's database: SQLite files (read-write, or read-only for commands that only read),
any other SQLAlchemy URL; an integrity check before anything is written; database errors as one line.

>>> engine = open_engine("results/mnistlab.db", read_only=True)   # raises StoreError if there is none
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from ..errors import NoStore, StoreError


def now() -> dt.datetime:
    """UTC now, naive (as stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***``: what messages may show of a store URL.

    >>> mask("postgresql+psycopg://me:s3cret@db/x")
    'postgresql+psycopg://me:***@db/x'
    """
    return re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)


def where(engine: sa.Engine) -> str:
    """How messages name a store: the file of an SQLite store, else its URL without the password."""
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return engine.url.database
    return engine.url.render_as_string(hide_password=True)


def sqlite_file(url: str) -> str | None:
    """The database file of an SQLite URL or bare path; None for other databases and in-memory ones."""
    if "://" not in url:
        return str(Path(url).resolve())
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return str(Path(parsed.database).resolve())


def open_engine(url: str, read_only: bool = False) -> sa.Engine:
    """An engine for ``url`` (a bare path means an SQLite file).

    ``read_only``: the store must exist already ("no store at PATH" otherwise, and nothing is
    created); an SQLite file that cannot be written is opened read-only, and transactions never
    take the write lock."""
    database = sqlite_file(url)
    if database is not None:
        return _sqlite_engine(database, read_only)
    try:
        return sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot open store {mask(url)!r}: {mask(str(exc))}") from None


def _sqlite_engine(database: str, read_only: bool) -> sa.Engine:
    path = Path(database)
    if path.is_dir():
        raise StoreError(f"{database}: is a directory; --store wants a database file or URL")
    if read_only and not path.exists():
        raise NoStore(f"no store at {database}; `mnistlab run STUDY.toml` makes one, or pass --store")
    writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    url = sa.engine.URL.create("sqlite", database=database)  # not parsed: any character may be in a path
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, future=True)
    elif writable:  # a normal connection (SQLite cleans up its -wal and -shm files), never locking for writes
        engine = sa.create_engine(url, future=True)
    else:
        engine = sa.create_engine(url, creator=lambda: _read_only_connection(path), future=True)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # WAL is set once the file is known to be ours
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"  # take the write lock up front: a deferred

    @sa.event.listens_for(engine, "begin")  # read-then-write fails at once under WAL when another wrote between
    def _begin(conn):
        conn.exec_driver_sql(begin)
    return engine


def _read_only_connection(path: Path) -> sqlite3.Connection:
    """A file we may not write: ``mode=ro``; where SQLite cannot create the WAL's -shm file beside it
    (a read-only folder), ``immutable=1``, which reads the file as it is."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True, check_same_thread=False)


def check_integrity(engine: sa.Engine) -> None:
    """Raise StoreError if SQLite's ``quick_check`` finds a damaged page (before anything writes to it)."""
    if engine.url.get_backend_name() != "sqlite":
        return
    try:
        with engine.connect() as conn:
            problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check")]
    except sa.exc.DBAPIError as exc:
        problems = [first_line(exc)]
    if problems != ["ok"]:
        detail = " ".join(re.sub(r"\*\*\* in database \w+ \*\*\*", "", problems[0]).split())  # one line
        raise StoreError(f"{where(engine)}: the database is damaged ({detail}); it was left untouched: "
                         "restore it from a copy or pass another --store")


def first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def translated(name: str) -> Iterator[None]:
    """Database errors (other than IntegrityError, which callers retry) as one-line StoreErrors."""
    try:
        yield
    except sa.exc.IntegrityError:
        raise
    except sa.exc.DBAPIError as exc:
        reason = first_line(exc)
        if "readonly" in reason or "read-only" in reason:
            raise StoreError(f"{name}: cannot write the store ({reason}); training needs write access to "
                             "the database and its folder") from None
        if "malformed" in reason or "not a database" in reason:
            raise StoreError(f"{name}: the database is damaged ({reason}); restore it from a copy "
                             "or pass another --store") from None
        raise StoreError(f"{name}: {mask(reason)}") from None
