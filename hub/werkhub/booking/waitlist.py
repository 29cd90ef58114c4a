"""The waitlist: queue a request that cannot be met now, serve the queue whenever devices
come free (oldest first: ``ledger.serve_waitlist``), cancel an entry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from werkhub.booking import guarantees, ledger, orgbudget, reads, rows, writes
from werkhub.booking.ledger import LedgerError, NotFound, Slot, WaitEntry
from werkhub.booking.quota import Policy, admits, check_policy
from werkhub.booking.settings import Caller, Settings
from werkhub.booking.store import Store
from werkhub.booking.tables import waitlist

#: how far around a grant the owner's other bookings are loaded for the quota check
AROUND = timedelta(days=8)


class Waitlist:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def enqueue(
        self,
        caller: Caller,
        owner: str,
        gpu_type: str,
        count: int,
        not_before: datetime,
        duration: timedelta,
        latest_start: datetime,
        owner_groups: Iterable[str] = (),
    ) -> dict:
        if owner != caller.name and not caller.admin:
            raise LedgerError("policy", "only administrators queue on behalf of others")
        self.settings.check_type(gpu_type, count)
        now = ledger.utcnow()
        begin = max(ledger.floor_minute(not_before), ledger.floor_minute(now))
        latest = ledger.floor_minute(latest_start)
        if latest < begin:
            raise LedgerError(
                "invalid", "latest_start must not be before the start", field="latest_start"
            )
        ledger.check_interval(begin, begin + duration)
        # the owner's limits as they are now: type, length and how far ahead are checked
        # here, quotas again whenever a slot is found (``serve``)
        policy = self.settings.policies.for_user(owner, owner_groups)
        check_policy(
            policy, self.settings.tz, owner, gpu_type, count, begin, begin + duration, now, []
        )
        with self.store.write() as conn:
            stamp = ledger.now_ts()
            entry_id = conn.execute(
                insert(waitlist)
                .values(
                    user=owner,
                    gpu_type=gpu_type,
                    count=count,
                    duration_min=int(duration.total_seconds() // 60),
                    not_before_min=rows.to_min(begin),
                    latest_start_min=rows.to_min(latest),
                    state="waiting",
                    policy=policy.model_dump(),
                    created=stamp,
                    updated=stamp,
                )
                .returning(waitlist.c.id)
            ).scalar_one()
            self.serve(conn, now)
            return _entry(conn, entry_id)

    def entries(self, caller: Caller, user: str | None = None) -> list[dict[str, Any]]:
        """The caller's entries (admins: everyone's, or ``user``'s), oldest first."""
        query = select(waitlist.c.id).order_by(waitlist.c.id)
        if not caller.admin:
            query = query.where(waitlist.c.user == caller.name)
        elif user:
            query = query.where(waitlist.c.user == user)
        with self.store.read() as conn:
            return [_entry(conn, i) for i in conn.execute(query).scalars()]

    def cancel(self, caller: Caller, entry_id: int) -> dict[str, Any]:
        with self.store.write() as conn:
            row = conn.execute(select(waitlist).where(waitlist.c.id == entry_id)).mappings().first()
            if row is None or (row["user"] != caller.name and not caller.admin):
                raise NotFound(f"no waitlist entry {entry_id}")
            if row["state"] != "waiting":
                raise LedgerError("state", f"the entry is already {row['state']}")
            conn.execute(
                update(waitlist)
                .where(waitlist.c.id == entry_id)
                .values(state="cancelled", updated=ledger.now_ts())
            )
            return _entry(conn, entry_id)

    def serve(self, conn: Connection, now: datetime) -> None:
        """Inside a write transaction that may have freed devices: expire entries whose
        latest start passed, then book what fits, per GPU type, oldest entry first."""
        waiting = [
            rows.wait_entry(r)
            for r in conn.execute(
                select(waitlist).where(waitlist.c.state == "waiting").order_by(waitlist.c.id)
            ).mappings()
        ]
        if not waiting:
            return
        expired = ledger.expired_waits(waiting, now)
        for entry in expired:
            self._expire(conn, entry)
        live = [e for e in waiting if e not in expired]
        policies = self._policies(conn)

        def admit(entry: WaitEntry, start: datetime, promised: Sequence[Slot]) -> bool:
            end = start + entry.duration
            mine = reads.user_slots(conn, entry.user, start - AROUND, end + AROUND)
            if not admits(policies[entry.id], self.settings.tz, entry, start, now, mine, promised):
                return False
            try:
                orgbudget.check(conn, self.settings.tz, entry.user, entry.count, start, end)
            except LedgerError:
                return False
            return True

        for gpu_type in sorted({e.gpu_type for e in live}):
            entries = [e for e in live if e.gpu_type == gpu_type]
            hi = max(e.latest_start + e.duration for e in entries)
            slots = reads.type_slots(conn, gpu_type, ledger.floor_minute(now), hi)
            for entry, start, devices in ledger.serve_waitlist(
                entries, self.settings.pools, slots, now, admit=admit
            ):
                self._grant(conn, entry, start, devices)

    def _policies(self, conn: Connection) -> dict[int, Policy]:
        """Each waiting entry's policy as it was queued (older entries: the owner's now)."""
        return {
            r.id: Policy.model_validate(r.policy)
            if r.policy
            else self.settings.policies.for_user(r.user, ())
            for r in conn.execute(
                select(waitlist.c.id, waitlist.c.user, waitlist.c.policy).where(
                    waitlist.c.state == "waiting"
                )
            )
        }

    def _expire(self, conn: Connection, entry: WaitEntry) -> None:
        conn.execute(
            update(waitlist)
            .where(waitlist.c.id == entry.id)
            .values(state="expired", updated=ledger.now_ts())
        )
        writes.notify(
            conn,
            entry.user,
            "waitlist_expired",
            f"No {entry.count} x {entry.gpu_type} came free in time; "
            "your waitlist request expired.",
        )

    def _grant(
        self, conn: Connection, entry: WaitEntry, start: datetime, devices: tuple[str, ...]
    ) -> None:
        end = start + entry.duration
        # borrowed as at a create: beyond the owner's organisation's guarantee then
        who = guarantees.standing(conn, entry.user, entry.gpu_type)
        slots = reads.type_slots(conn, entry.gpu_type, start, end)
        borrowed = guarantees.borrowed(conn, who, slots, entry.count, start, end)
        booking, _ = writes.insert_booking(
            conn,
            entry.user,
            entry.gpu_type,
            entry.count,
            start,
            end,
            devices,
            "waitlist",
            kind="server",
            borrowed=borrowed,
        )
        booking_id = booking["id"]
        conn.execute(
            update(waitlist)
            .where(waitlist.c.id == entry.id)
            .values(state="granted", booking_id=booking_id, updated=ledger.now_ts())
        )
        start_local = start.astimezone(self.settings.tz)
        writes.notify(
            conn,
            entry.user,
            "waitlist_granted",
            f"Your waitlisted request was booked: {entry.count} x "
            f"{entry.gpu_type} from {start_local:%Y-%m-%d %H:%M %Z}."
            + (
                " It is borrowed (beyond your organisation's guaranteed GPUs) and may be "
                "reclaimed, with a warning ahead."
                if borrowed
                else ""
            ),
            booking_id,
        )


def _entry(conn: Connection, entry_id: int) -> dict[str, Any]:
    row = conn.execute(select(waitlist).where(waitlist.c.id == entry_id)).mappings().one()
    return {
        "id": row["id"],
        "user": row["user"],
        "gpu_type": row["gpu_type"],
        "count": row["count"],
        "duration_minutes": row["duration_min"],
        "not_before": rows.from_min(row["not_before_min"]),
        "latest_start": rows.from_min(row["latest_start_min"]),
        "state": row["state"],
        "booking_id": row["booking_id"],
        "created": rows.from_ts(row["created"]),
    }
