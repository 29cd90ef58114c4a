"""The booking services' shared database access: write and read transactions.

Writes on SQLite take the database write lock at BEGIN (see ``werkhub.db``); on
PostgreSQL every write transaction first takes one advisory lock, so rule checks and
inserts never interleave. Either way the database itself refuses overlapping promises
of a unit (exclusion constraint or trigger), so a bug here cannot double-book.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from werkhub.booking.journal import Occupancies
from werkhub.db import writer_queue

LOCK_KEY = 727_274_001  # advisory lock of the ledger on PostgreSQL


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
        self.occupancy = Occupancies()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock:
            try:
                with self.writer.begin() as conn:
                    if self.postgres:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                    yield conn
            finally:
                self.version += 1

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.reader.connect() as conn:
            yield conn
