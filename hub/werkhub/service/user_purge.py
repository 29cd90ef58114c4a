"""What deleting a hub user removes from the werkhub service's database.

Their jobs are paused (nothing fires any more), then deleted; queued runs are cancelled
and running ones named for the caller to stop. Future bookings are cancelled, running
ones released, waiting list entries cancelled. Runs, reports and booking history stay
for administrators but move to a tombstone owner (``~NAME~SECONDS``, never a valid user
name), so a new account with the same name starts clean: it sees none of them and
inherits no quota use. Their home folder in the embedded default is removed too.
``before`` limits the purge to rows written before a given time (a name deleted and
created again while the service was not told: only the old account's rows go, and the
home, which the new account may already use, stays).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select, update

from werkhub.auth.names import is_valid
from werkhub.booking import ledger, rows
from werkhub.booking.ledger import HOLDING, LedgerError
from werkhub.booking.manager import BookingManager
from werkhub.booking.settings import Caller
from werkhub.booking.tables import bookings, notifications, server_bookings, waitlist
from werkhub.jobs.store import ACTIVE, WAITING, JobStore
from werkhub.jobs.tables import job_runs, jobs

log = logging.getLogger("werkhub.service.user_purge")
PURGER = Caller(name="werkhub", admin=True)


@dataclass
class Purged:
    """What one purge did (ids), as the admin endpoint reports it."""

    name: str
    tombstone: str
    jobs: list[int] = field(default_factory=list)
    runs_cancelled: list[int] = field(default_factory=list)
    runs_stopped: list[int] = field(default_factory=list)
    bookings_cancelled: list[int] = field(default_factory=list)
    bookings_released: list[int] = field(default_factory=list)
    waitlist_cancelled: list[int] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    home_removed: bool = False

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.jobs,
                self.runs_cancelled,
                self.runs_stopped,
                self.bookings_cancelled,
                self.bookings_released,
                self.waitlist_cancelled,
                self.endpoints,
                self.home_removed,
            )
        )


def tombstone(name: str, at: float) -> str:
    """The owner a deleted account's history moves to (fits the 64-character columns)."""
    return f"~{name[:48]}~{int(at)}"


def pause_jobs(store: JobStore, owner: str, before: float | None, at: float) -> list[int]:
    """First step: pause every live job of ``owner`` so none fires while the rest runs."""
    query = select(jobs.c.id).where(jobs.c.owner == owner, jobs.c.deleted.is_(None))
    if before is not None:
        query = query.where(jobs.c.created < before)
    with store.write() as conn:
        ids = list(conn.execute(query).scalars())
        if ids:
            conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(paused=True, updated=at))
    return ids


def delete_jobs(
    store: JobStore, owner: str, before: float | None, at: float, purged: Purged
) -> None:
    """Second step: delete the jobs, cancel their queued runs, move history aside."""
    query = select(jobs.c.id).where(jobs.c.owner == owner)
    if before is not None:
        query = query.where(jobs.c.created < before)
    with store.write() as conn:
        ids = list(conn.execute(query).scalars())
        if not ids:
            return
        live = list(conn.execute(query.where(jobs.c.deleted.is_(None))).scalars())
        conn.execute(
            update(jobs).where(jobs.c.id.in_(live)).values(deleted=at, next_fire=None, updated=at)
        )
        mine = job_runs.c.job_id.in_(ids)
        waiting = select(job_runs.c.id).where(mine, job_runs.c.status.in_(WAITING))
        purged.runs_cancelled = list(conn.execute(waiting).scalars())
        conn.execute(
            update(job_runs)
            .where(mine, job_runs.c.status.in_(WAITING))
            .values(status="cancelled", finished=at, error="the owner's account was deleted")
        )
        running = select(job_runs.c.id).where(mine, job_runs.c.status.in_(ACTIVE))
        purged.runs_stopped = list(conn.execute(running).scalars())
        conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(owner=purged.tombstone))
        conn.execute(update(job_runs).where(mine).values(owner=purged.tombstone))
        purged.jobs = live


def end_bookings(manager: BookingManager, owner: str, before: float | None, purged: Purged) -> None:
    """Cancel future bookings, release running ones, cancel waiting list entries; then
    move the owner's booking history to the tombstone."""
    held = select(bookings.c.id, bookings.c.start_min).where(
        bookings.c.user == owner, bookings.c.state.in_([str(s) for s in HOLDING])
    )
    queued = select(waitlist.c.id).where(waitlist.c.user == owner, waitlist.c.state == "waiting")
    if before is not None:
        held = held.where(bookings.c.created < before)
        queued = queued.where(waitlist.c.created < before)
    with manager.read() as conn:
        holding = list(conn.execute(held).all())
        entries = list(conn.execute(queued).scalars())
    now = ledger.utcnow()
    for booking_id, start_min in holding:
        try:
            if rows.from_min(start_min) > now:
                manager.cancel(PURGER, booking_id)
                purged.bookings_cancelled.append(booking_id)
            else:
                manager.release(PURGER, booking_id)
                purged.bookings_released.append(booking_id)
        except LedgerError as exc:  # ended in between
            log.info("booking %s of %s left as it is: %s", booking_id, owner, exc)
    for entry_id in entries:
        try:
            manager.cancel_wait(PURGER, entry_id)
            purged.waitlist_cancelled.append(entry_id)
        except LedgerError as exc:
            log.info("waiting list entry %s of %s left as it is: %s", entry_id, owner, exc)
    _rename_history(manager, owner, before, purged.tombstone)


def _rename_history(manager: BookingManager, owner: str, before: float | None, to: str) -> None:
    with manager.write() as conn:
        for table, stamp in (
            (bookings, bookings.c.created),
            (waitlist, waitlist.c.created),
            (notifications, notifications.c.at),
        ):
            condition = [table.c.user == owner]
            if before is not None:
                condition.append(stamp < before)
            conn.execute(update(table).where(*condition).values(user=to))
        if before is None:
            conn.execute(delete(server_bookings).where(server_bookings.c.user == owner))


def remove_home(homes: Path, name: str) -> bool:
    """Remove ``homes/name`` (the embedded default's home of a deleted user), never
    following a link out of the homes folder. True when something was removed."""
    if not is_valid(name):
        return False
    home = homes / name
    if home.is_symlink():
        home.unlink()
        return True
    if not home.is_dir():
        return False
    shutil.rmtree(home)
    return True


def live_owners(store: JobStore | None, manager: BookingManager) -> dict[str, float]:
    """Owners of live jobs and holding bookings, each with the creation time of their
    oldest such row: what the reconciliation compares with the hub's accounts, so that an
    account deleted (or deleted and created again) before the service ever saw it in
    the hub's user list is caught too."""
    oldest: dict[str, float] = {}

    def note(found: object) -> None:
        for owner, created in found:  # type: ignore[attr-defined]
            oldest[owner] = min(float(created), oldest.get(owner, float("inf")))

    if store is not None:
        with store.read() as conn:
            note(
                conn.execute(
                    select(jobs.c.owner, func.min(jobs.c.created))
                    .where(jobs.c.deleted.is_(None))
                    .group_by(jobs.c.owner)
                )
            )
    holding = [s.value for s in HOLDING]
    with manager.read() as conn:
        note(
            conn.execute(
                select(bookings.c.user, func.min(bookings.c.created))
                .where(bookings.c.state.in_(holding))
                .group_by(bookings.c.user)
            )
        )
    return {o: t for o, t in oldest.items() if is_valid(o)}  # tombstones are not accounts
