"""Each process's occupancy of the GPU types in memory, kept in step with the database.

``Occupancies.busy`` first asks the journal of changes to ``booking_units`` (migration
0014) for its newest entry: one lookup of the primary key when nothing changed, the
common case. Otherwise it reads the entries since it last looked, joined with the rows
as they are now, and applies them: a row holding its unit is put, any other (released,
cancelled, ended, deleted) dropped. Applying an entry twice, or out of turn, changes
nothing, so a type is loaded whole after its first sync without any gap. Writes by other
processes (a second service, the command line) are seen at the next query, not after a
time to live. When the entries it needs were pruned, it loads the types again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, true

from werkhub.booking.occupancy import TypeOccupancy
from werkhub.booking.tables import booking_units, ledger_journal

#: journal entries kept by ``prune`` (a process that fell further behind loads anew)
KEEP = 100_000
#: at most this many new entries are applied by ``busy_at_once`` (more: ``busy``'s work)
AT_ONCE = 200
#: entries deleted by one ``prune`` at most (a tick): a bulk load's hundred thousand
#: entries go over a few minutes instead of one long write transaction
PRUNE_BATCH = 5_000

#: two subqueries: SQLite answers a lone min() or max() from the key's ends, but scans
#: the whole table for both in one select
_BOUNDS = select(
    select(func.min(ledger_journal.c.seq)).scalar_subquery(),
    select(func.max(ledger_journal.c.seq)).scalar_subquery(),
)
_CHANGES = (
    select(
        ledger_journal.c.row_id,
        booking_units.c.gpu_type,
        booking_units.c.unit,
        booking_units.c.start_min,
        booking_units.c.end_min,
        booking_units.c.holding,
    )
    .select_from(
        ledger_journal.outerjoin(booking_units, booking_units.c.id == ledger_journal.c.row_id)
    )
    .where(ledger_journal.c.seq > bindparam("after"), ledger_journal.c.seq <= bindparam("upto"))
    .order_by(ledger_journal.c.seq)
)
_HOLDING = select(
    booking_units.c.id, booking_units.c.unit, booking_units.c.start_min, booking_units.c.end_min
).where(booking_units.c.gpu_type == bindparam("gpu_type"), booking_units.c.holding == true())


class Occupancies:
    """The types asked for so far, and the last journal entry they reflect."""

    def __init__(self, commits: Callable[[], int] | None = None) -> None:
        self.types: dict[str, TypeOccupancy] = {}
        self.last: int | None = None
        self._lock = threading.Lock()
        #: where the database says cheaply that nothing was committed (SQLite's
        #: ``data_version``, ``werkhub.db.commit_counter``): its value before the last sync
        self._commits = commits
        self._synced_at: int | None = None
        #: whether anyone asked ``busy_unchanged`` (PostgreSQL's counter is a listening
        #: connection and thread: only processes that use it open them)
        self._watching = False

    def busy(self, conn: Connection, gpu_type: str, lo: int, hi: int, step: int) -> list[int]:
        """Units of ``gpu_type`` busy in each step of [lo, hi) (minutes), as of now."""
        with self._lock:
            mark = self._mark()
            self._sync(conn)
            self._synced_at = mark
            occupancy = self.types.get(gpu_type)
            if occupancy is None:
                occupancy = self.types[gpu_type] = TypeOccupancy()
                for row, unit, start, end in conn.execute(_HOLDING, {"gpu_type": gpu_type}):
                    occupancy.put(row, unit, start, end)
            return occupancy.busy(lo, hi, step)

    def _mark(self) -> int | None:
        return self._commits() if self._commits is not None and self._watching else None

    def busy_unchanged(self, gpu_type: str, lo: int, hi: int, step: int) -> list[int] | None:
        """``busy`` without touching the database, when the database says nothing was
        committed since the last sync and the type is loaded; otherwise None."""
        occupancy = self.types.get(gpu_type)
        if self._commits is None:
            return None
        self._watching = True
        if occupancy is None or not self._lock.acquire(blocking=False):
            return None
        try:
            if self._synced_at is None or self._commits() != self._synced_at:
                return None
            return occupancy.busy(lo, hi, step)
        finally:
            self._lock.release()

    def busy_at_once(
        self, conn: Connection, gpu_type: str, lo: int, hi: int, step: int
    ) -> list[int] | None:
        """``busy`` when it is quick: the type is loaded, no other thread is at it, and
        few entries are new; otherwise None, without waiting. The service answers these
        in its event loop instead of handing them to a worker thread."""
        if gpu_type not in self.types or not self._lock.acquire(blocking=False):
            return None
        try:
            mark = self._mark()
            bounds = conn.execute(_BOUNDS).one()
            if (bounds[1] or 0) - (self.last or 0) > AT_ONCE:
                return None
            self._sync(conn, bounds)
            self._synced_at = mark
            occupancy = self.types.get(gpu_type)
            return None if occupancy is None else occupancy.busy(lo, hi, step)
        finally:
            self._lock.release()

    def _sync(self, conn: Connection, bounds: Any = None) -> None:
        first, newest = bounds if bounds is not None else conn.execute(_BOUNDS).one()
        newest = newest or 0
        if self.last is None or newest < self.last or (first or 0) > self.last + 1:
            # the first look, a journal that went back (another database), or entries
            # pruned before this process saw them: every type is loaded anew when asked
            self.types.clear()
        elif newest > self.last:
            bounds = {"after": self.last, "upto": newest}
            for row, gpu_type, unit, start, end, holding in conn.execute(_CHANGES, bounds):
                for occupancy in self.types.values():
                    occupancy.drop(row)
                if holding and gpu_type in self.types:
                    self.types[gpu_type].put(row, unit, start, end)
        self.last = newest


def prune(conn: Connection) -> None:
    """Delete journal entries older than the newest ``KEEP``, ``PRUNE_BATCH`` at most (in
    a write transaction)."""
    oldest, newest = conn.execute(_BOUNDS).one()
    if newest is not None and newest - oldest >= KEEP:
        upto = min(newest - KEEP, oldest + PRUNE_BATCH - 1)
        conn.execute(delete(ledger_journal).where(ledger_journal.c.seq <= upto))
