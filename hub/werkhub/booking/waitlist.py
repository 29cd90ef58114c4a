"""Waitlist operations of the booking manager: queue, serve in order, cancel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from werkhub.booking import ledger, rows
from werkhub.booking.ledger import LedgerError, NotFound, Slot, WaitEntry
from werkhub.booking.quota import Policy, check_policy
from werkhub.booking.tables import waitlist

if TYPE_CHECKING:
    from werkhub.booking.manager import Caller


class WaitlistOps:
    """Mixed into BookingManager."""

    # ---- waitlist -------------------------------------------------------------------
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
        self.check_type(gpu_type, count)
        now = ledger.utcnow()
        begin = max(ledger.floor_minute(not_before), ledger.floor_minute(now))
        latest = ledger.floor_minute(latest_start)
        if latest < begin:
            raise LedgerError(
                "invalid", "latest_start must not be before the start", field="latest_start"
            )
        ledger.check_interval(begin, begin + duration)
        # the owner's limits as they are now: type, length and how far ahead are checked
        # here, quotas again whenever a slot is found (serve_waitlist's admit)
        policy = self.settings.policies.for_user(owner, owner_groups)
        check_policy(
            policy, self.settings.tz, owner, gpu_type, count, begin, begin + duration, now, []
        )
        with self.write() as conn:
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
            self._serve_waitlist(conn, now)
            return self._entry(conn, entry_id)

    def _entry(self, conn: Connection, entry_id: int) -> dict[str, Any]:
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

    def waitlist(self, caller: Caller, user: str | None = None) -> list[dict[str, Any]]:
        query = select(waitlist.c.id).order_by(waitlist.c.id)
        if not caller.admin:
            query = query.where(waitlist.c.user == caller.name)
        elif user:
            query = query.where(waitlist.c.user == user)
        with self.read() as conn:
            return [self._entry(conn, i) for i in conn.execute(query).scalars()]

    def cancel_wait(self, caller: Caller, entry_id: int) -> dict[str, Any]:
        with self.write() as conn:
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
            return self._entry(conn, entry_id)

    def _serve_waitlist(self, conn: Connection, now: datetime) -> None:
        waiting = [
            rows.wait_entry(r)
            for r in conn.execute(
                select(waitlist).where(waitlist.c.state == "waiting").order_by(waitlist.c.id)
            ).mappings()
        ]
        if not waiting:
            return
        for entry in ledger.expired_waits(waiting, now):
            conn.execute(
                update(waitlist)
                .where(waitlist.c.id == entry.id)
                .values(state="expired", updated=ledger.now_ts())
            )
            self._notify(
                conn,
                entry.user,
                "waitlist_expired",
                f"No {entry.count} x {entry.gpu_type} came free in time; "
                "your waitlist request expired.",
            )
        live = [e for e in waiting if e not in ledger.expired_waits(waiting, now)]
        policies = {
            r.id: Policy.model_validate(r.policy)
            if r.policy
            else self.settings.policies.for_user(r.user, ())
            for r in conn.execute(
                select(waitlist.c.id, waitlist.c.user, waitlist.c.policy).where(
                    waitlist.c.state == "waiting"
                )
            )
        }

        def admit(entry: WaitEntry, start: datetime, promised: Sequence[Slot]) -> bool:
            end = start + entry.duration
            mine = self._user_slots(
                conn, entry.user, start - timedelta(days=8), end + timedelta(days=8)
            )
            mine += [s for s in promised if s.id < 0 and s.user == entry.user]
            try:
                check_policy(
                    policies[entry.id],
                    self.settings.tz,
                    entry.user,
                    entry.gpu_type,
                    entry.count,
                    start,
                    end,
                    now,
                    mine,
                    check_advance=False,
                )
            except LedgerError:
                return False
            return True

        for gpu_type in sorted({e.gpu_type for e in live}):
            entries = [e for e in live if e.gpu_type == gpu_type]
            hi = max(e.latest_start + e.duration for e in entries)
            slots = self._type_slots(conn, gpu_type, ledger.floor_minute(now), hi)
            for entry, start, devices in ledger.serve_waitlist(
                entries, self.settings.units, slots, now, admit=admit
            ):
                booking_id = self._insert(
                    conn,
                    entry.user,
                    entry.gpu_type,
                    entry.count,
                    start,
                    start + entry.duration,
                    devices,
                    "waitlist",
                )
                conn.execute(
                    update(waitlist)
                    .where(waitlist.c.id == entry.id)
                    .values(state="granted", booking_id=booking_id, updated=ledger.now_ts())
                )
                start_local = start.astimezone(self.settings.tz)
                self._notify(
                    conn,
                    entry.user,
                    "waitlist_granted",
                    f"Your waitlisted request was booked: {entry.count} x "
                    f"{entry.gpu_type} from {start_local:%Y-%m-%d %H:%M %Z}.",
                    booking_id,
                )
