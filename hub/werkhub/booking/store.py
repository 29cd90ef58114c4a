"""The booking services' shared database access: write and read transactions.

Writes on SQLite take the database write lock at BEGIN (see ``werkhub.db``); on
PostgreSQL every write transaction first takes one advisory lock, so rule checks and
inserts never interleave. Either way the database itself refuses overlapping promises
of a unit (exclusion constraint or trigger), so a bug here cannot double-book.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from werkhub.booking.journal import Occupancies
from werkhub.db import commit_counter, writer_queue

LOCK_KEY = 727_274_001  # advisory lock of the ledger on PostgreSQL

#: what became of one call of a batch: (True, its value) or (False, the exception it raised)
Outcome = tuple[bool, Any]


class Store:
    """One writer engine (serialised), one reader engine, and a version every write
    bumps so that read caches of this process know when they went stale."""

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader
        self.postgres = writer.dialect.name == "postgresql"
        self._write_lock = writer_queue(writer)
        #: bumped after every write transaction (availability no longer caches by it:
        #: ``occupancy`` follows the database's journal instead)
        self.version = 0
        #: the GPU types' occupancy in memory, for availability
        self.occupancy = Occupancies(commit_counter(reader))
        #: the open transaction of :meth:`batch` in the thread running it
        self._joined = threading.local()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction of its own: behind this process's other writers, on
        PostgreSQL under the ledger's advisory lock; the version is bumped after it."""
        with self._write_lock:
            try:
                with self.writer.begin() as conn:
                    if self.postgres:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                    yield conn
            finally:
                self.version += 1

    @contextmanager
    def write(self) -> Iterator[Connection]:
        joined: Connection | None = getattr(self._joined, "conn", None)
        if joined is not None:  # one call of a batch: a savepoint of the batch's transaction
            with self._savepoint(joined):
                yield joined
            return
        with self._transaction() as conn:
            yield conn

    @contextmanager
    def _savepoint(self, conn: Connection) -> Iterator[None]:
        """A savepoint in the driver's own SQL: SQLAlchemy's ``begin_nested`` names each
        savepoint anew, so its statements missed the compiled cache and were compiled for
        every call (a tenth of the service's CPU per create in a batch). Savepoints nest by
        depth, so a write inside a write gets a name of its own."""
        depth: int = getattr(self._joined, "depth", 0)
        name = f"werkhub_call_{depth}"
        conn.exec_driver_sql(f"SAVEPOINT {name}")
        self._joined.depth = depth + 1
        try:
            yield
        except BaseException:
            conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
            conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
        finally:
            self._joined.depth = depth

    def batch(self, calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
        """Run ``calls`` (each writing through :meth:`write`) in one write transaction with
        one commit, each call in a savepoint of its own: a call that raises leaves nothing
        and the others stand. The commit, and so each call's promise, is made before any
        outcome is returned. Should the commit itself fail, nothing of the batch is kept
        and every call runs again alone."""
        if len(calls) == 1:
            return [_outcome(calls[0])]
        outcomes: list[Outcome] = []
        try:
            with self._transaction() as conn:
                self._joined.conn = conn
                try:
                    outcomes = [_outcome(call) for call in calls]
                finally:
                    self._joined.conn = None
        except SQLAlchemyError:
            return [_outcome(call) for call in calls]
        return outcomes

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.reader.connect() as conn:
            yield conn


def _outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return True, call()
    except Exception as exc:  # handed to the caller it belongs to
        return False, exc
