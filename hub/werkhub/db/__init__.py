"""Database engines and Alembic migrations of the werkhub service."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent
_WRITER_QUEUES: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    command.upgrade(alembic_config(url), "head")


def make_engines(url: str) -> tuple[Engine, Engine]:
    """(writer, reader) engines. SQLite: WAL, and writes take the lock at BEGIN, so two
    write transactions never interleave; PostgreSQL: pooled connections (the booking
    code adds row and advisory locks inside its transactions)."""
    if make_url(url).get_backend_name() == "sqlite":
        writer = _sqlite_engine(url, immediate=True)
        reader = _sqlite_engine(url, immediate=False)
        return writer, reader
    engine = create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)
    return engine, engine


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    # as many pooled connections as the service has worker threads (anyio's default 40):
    # a connection beyond the pool is opened (PRAGMAs and all) and closed for each request;
    # the most recently used first (LIFO): each SQLite connection has its own page cache,
    # so a request on a connection idle since the data changed reads its pages again
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=40,
        max_overflow=20,
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def commit_counter(engine: Engine) -> Callable[[], int] | None:
    """A number that changes whenever a transaction of another connection, in this process
    or any other, commits to the database. SQLite (a file): ``PRAGMA data_version`` of a
    connection of its own, opened at the first call and kept, a call into SQLite with no
    I/O; PostgreSQL: the ledger's notifications, counted by a listening thread
    (``werkhub.db.notify``); None for an in-memory SQLite database."""
    if engine.dialect.name == "postgresql":
        from werkhub.db.notify import CommitListener

        return CommitListener(engine)
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    held: list[Any] = []

    def count() -> int:
        if not held:
            raw = engine.raw_connection()
            held.append(raw.dbapi_connection)
            raw.detach()  # out of the pool: nobody else ever uses this connection
        return int(held[0].execute("PRAGMA data_version").fetchone()[0])

    return count


def writer_queue(writer: Engine) -> AbstractContextManager[object]:
    """The in-process queue every writer of this engine's database waits in: on SQLite
    one lock per engine shared by all stores (bookings and jobs), so this process's writers
    queue here instead of in SQLite's busy-wait, which sleeps and lets newcomers overtake
    (long tail latencies); PostgreSQL takes its own locks inside the transactions."""
    if writer.dialect.name == "postgresql":
        return nullcontext()
    return _WRITER_QUEUES.setdefault(writer, threading.RLock())


@contextmanager
def transaction(writer: Engine) -> Iterator[Connection]:
    """One write transaction, queued behind this process's other writers (SQLite),
    committed when the block ends, rolled back when it raises."""
    with writer_queue(writer), writer.begin() as conn:
        yield conn
