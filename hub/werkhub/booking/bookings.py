"""Booking operations: create, read, change, cancel, release. Each is one transaction
(``Store``) that applies the pure rules (``ledger``, ``quota``); every change that frees
devices serves the waitlist in the same transaction."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, and_, select
from sqlalchemy.exc import IntegrityError

from werkhub.booking import guarantees, ledger, orgbudget, reads, rows, writes
from werkhub.booking.ledger import HOLDING, LedgerError, State
from werkhub.booking.quota import check_policy
from werkhub.booking.settings import Caller, Settings
from werkhub.booking.store import Store
from werkhub.booking.tables import bookings
from werkhub.booking.waitlist import AROUND, Waitlist

P = ParamSpec("P")
R = TypeVar("R")


def dates_in_range(method: Callable[P, R]) -> Callable[P, R]:
    """Date arithmetic that overflows (a moment near year 1 or 9999) is a refused
    request (422), not a server error; the transaction it happened in rolls back."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OverflowError:
            raise LedgerError(
                "invalid", "start or end is out of range: give a date in the years 2000-2200"
            ) from None

    return guarded


class Bookings:
    def __init__(self, store: Store, settings: Settings, waitlist: Waitlist) -> None:
        self.store = store
        self.settings = settings
        self.waitlist = waitlist

    def _view(self, conn: Connection, booking_id: int) -> dict[str, Any]:
        return reads.view(conn, reads.row(conn, booking_id) or {}, self.settings.simulated_ids)

    def _conflict(
        self,
        conn: Connection,
        gpu_type: str,
        count: int,
        start: datetime,
        end: datetime,
        ignore: int | None = None,
    ) -> LedgerError:
        """The refusal of a request that does not fit, naming the earliest slot that would."""
        horizon = start + self.settings.search_horizon
        slots = reads.type_slots(conn, gpu_type, start, horizon + (end - start))
        found = ledger.earliest_slot(
            self.settings.pool(gpu_type),
            slots,
            gpu_type,
            count,
            end - start,
            start,
            horizon,
            ignore=ignore,
        )
        earliest = None
        if found is not None:
            earliest = {"start": found[0], "end": found[0] + (end - start)}
        return LedgerError(
            "conflict",
            f"{count} x {gpu_type} are not free for the whole time asked for",
            earliest_free=earliest,
        )

    @dates_in_range
    def create(
        self,
        caller: Caller,
        owner: str,
        owner_groups: Iterable[str],
        gpu_type: str,
        count: int,
        start: datetime | None,
        end: datetime | None,
        duration: timedelta | None,
        *,
        key: str | None = None,
        request_hash: str | None = None,
        override: bool = False,
        kind: str = "server",
    ) -> tuple[dict, bool]:
        """Book; returns (booking, replayed). ``start=None`` means now (on demand)."""
        if owner != caller.name and not caller.admin:
            raise LedgerError("policy", "only administrators book on behalf of others")
        if override and not caller.admin:
            raise LedgerError("policy", "only administrators may override policies")
        self.settings.check_type(gpu_type, count)
        now = ledger.utcnow()
        begin = ledger.floor_minute(now) if start is None else ledger.floor_minute(start)
        finish = begin + duration if duration is not None else ledger.floor_minute(end)  # type: ignore[arg-type]
        ledger.check_interval(begin, finish)
        if finish <= now:
            raise LedgerError("invalid", "the booking would end in the past", field="end")
        if begin < ledger.floor_minute(now):
            raise LedgerError(
                "invalid", 'start lies in the past; use "now" to book from now', field="start"
            )
        try:
            with self.store.write() as conn:
                if key is not None:
                    replay = self._replay(conn, owner, key, request_hash)
                    if replay is not None:
                        return replay, True
                if not override:
                    policy = self.settings.policies.for_user(owner, owner_groups)
                    mine = reads.user_slots(conn, owner, begin - AROUND, finish + AROUND)
                    check_policy(
                        policy, self.settings.tz, owner, gpu_type, count, begin, finish, now, mine
                    )
                who = guarantees.standing(conn, owner, gpu_type)
                if not override:
                    orgbudget.check(
                        conn, self.settings.tz, owner, count, begin, finish, org=who.budget()
                    )
                slots = reads.type_slots(conn, gpu_type, begin, finish)
                devices = ledger.choose_devices(
                    self.settings.pool(gpu_type), slots, gpu_type, count, begin, finish
                )
                borrowed = guarantees.borrowed(conn, who, slots, count, begin, finish)
                if devices is None and who.guarantee and not borrowed:
                    begin, finish, devices = self._reclaim(
                        conn, who, owner, gpu_type, count, begin, finish, now
                    )
                if devices is None:
                    raise self._conflict(conn, gpu_type, count, begin, finish)
                booking, trail = writes.insert_booking(
                    conn,
                    owner,
                    gpu_type,
                    count,
                    begin,
                    finish,
                    devices,
                    caller.name,
                    key,
                    request_hash,
                    kind,
                    borrowed,
                )
                # the answer from what was just written: nothing is read back
                return reads.compose(booking, devices, trail, self.settings.simulated_ids), False
        except IntegrityError:
            if key is not None:  # a concurrent request with the same key won the race
                with self.store.read() as conn:
                    replay = self._replay(conn, owner, key, request_hash)
                    if replay is not None:
                        return replay, True
            raise LedgerError(
                "conflict", f"{count} x {gpu_type} were just taken; try again", earliest_free=None
            ) from None

    def _reclaim(
        self,
        conn: Connection,
        who: guarantees.Standing,
        owner: str,
        gpu_type: str,
        count: int,
        begin: datetime,
        finish: datetime,
        now: datetime,
    ) -> tuple[datetime, datetime, tuple[str, ...] | None]:
        """Room for a booking within the owner's guarantee, made by ending borrowed
        bookings of others; the (possibly later) start, end and devices, or no devices."""
        warn = timedelta(minutes=self.settings.warn_minutes)
        horizon = finish + warn + timedelta(minutes=1)
        slots = reads.type_slots(conn, gpu_type, begin, horizon)
        found = guarantees.plan(
            conn,
            self.settings.pool(gpu_type),
            slots,
            who,
            gpu_type,
            count,
            begin,
            finish,
            now,
            warn,
        )
        if found is None:
            return begin, finish, None
        for slot, new_end in found.cuts:
            if new_end is None:
                writes.update_booking(conn, slot.id, state=State.CANCELLED)
                writes.record(
                    conn, slot.id, "werkhub", "reclaim", cancelled=True, by=owner, org=who.slug
                )
            else:
                # the reclaimed time is no longer booked (nor billed, nor counted as
                # released by its holder): werkhub shortened the booking
                writes.update_booking(conn, slot.id, end=new_end, booked_end=True)
                writes.record(
                    conn, slot.id, "werkhub", "reclaim", end=new_end, by=owner, org=who.slug
                )
            writes.notify(
                conn,
                slot.user,
                "reclaim",
                guarantees.reclaim_message(slot, who.slug or "", new_end, now, self.settings.tz),
                slot.id,
            )
        return found.start, found.end, found.devices

    def _replay(
        self, conn: Connection, owner: str, key: str, request_hash: str | None
    ) -> dict | None:
        row = (
            conn.execute(
                select(bookings).where(
                    and_(bookings.c.user == owner, bookings.c.idempotency_key == key)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        if row["request_hash"] != request_hash:
            raise LedgerError(
                "invalid",
                "this Idempotency-Key was used for a different request",
                field="Idempotency-Key",
            )
        return reads.view(conn, dict(row), self.settings.simulated_ids)

    def get(self, caller: Caller, booking_id: int) -> dict[str, Any]:
        with self.store.read() as conn:
            row = reads.visible_row(conn, booking_id, caller)
            return reads.view(conn, row, self.settings.simulated_ids)

    def list(
        self,
        caller: Caller,
        *,
        user: str | None = None,
        state: str | None = None,
        gpu_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict]:
        conditions: list[Any] = []
        if not caller.admin:
            conditions.append(bookings.c.user == caller.name)
        elif user:
            conditions.append(bookings.c.user == user)
        if state:
            conditions.append(bookings.c.state == state)
        if gpu_type:
            conditions.append(bookings.c.gpu_type == gpu_type)
        if start is not None:
            conditions.append(bookings.c.end_min > rows.to_min(start))
        if end is not None:
            conditions.append(bookings.c.start_min < rows.to_min(end))
        query = (
            select(bookings)
            .where(*conditions)
            .order_by(bookings.c.start_min.desc(), bookings.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.store.read() as conn:
            simulated = self.settings.simulated_ids
            return [reads.view(conn, dict(r), simulated) for r in conn.execute(query).mappings()]

    @dates_in_range
    def change(
        self,
        caller: Caller,
        booking_id: int,
        owner_groups: Iterable[str],
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        override: bool = False,
    ) -> dict[str, Any]:
        """Move the start of a future booking and/or extend or shorten its end."""
        if override and not caller.admin:
            raise LedgerError("policy", "only administrators may override policies")
        now = ledger.utcnow()
        with self.store.write() as conn:
            row = reads.visible_row(conn, booking_id, caller)
            current = rows.slot(row, reads.devices(conn, [booking_id])[booking_id])
            if current.state not in HOLDING:
                raise LedgerError("state", f"a booking in state '{current.state}' cannot change")
            new_start = current.start if start is None else ledger.floor_minute(start)
            new_end = current.end if end is None else ledger.floor_minute(end)
            if new_start != current.start and (current.start <= now or new_start < now):
                raise LedgerError(
                    "state",
                    "only a booking that has not started can move its start, and not into the past",
                    field="start",
                )
            ledger.check_interval(new_start, new_end)
            if new_end <= now:
                raise LedgerError(
                    "invalid",
                    "the new end lies in the past; release the booking instead",
                    field="end",
                )
            if not override:
                policy = self.settings.policies.for_user(current.user, owner_groups)
                mine = reads.user_slots(conn, current.user, new_start - AROUND, new_end + AROUND)
                check_policy(
                    policy,
                    self.settings.tz,
                    current.user,
                    current.gpu_type,
                    current.count,
                    new_start,
                    new_end,
                    now,
                    mine,
                    ignore=booking_id,
                    check_advance=new_start != current.start,
                )
                orgbudget.check(
                    conn,
                    self.settings.tz,
                    current.user,
                    current.count,
                    new_start,
                    new_end,
                    ignore=booking_id,
                )
            slots = reads.type_slots(conn, current.gpu_type, new_start, new_end)
            same = ledger.choose_devices(
                self.settings.pool(current.gpu_type),
                slots,
                current.gpu_type,
                current.count,
                new_start,
                new_end,
                prefer=current.devices,
                ignore=booking_id,
            )
            devices: tuple[str, ...] | None = same
            if same != current.devices and current.state == State.ACTIVE:
                devices = None  # a running server keeps its devices
            if devices is None:
                raise self._conflict(
                    conn, current.gpu_type, current.count, new_start, new_end, ignore=booking_id
                )
            # borrowed or not is decided anew for the booking's new times, as a whole
            who = guarantees.standing(conn, current.user, current.gpu_type)
            borrowed = guarantees.borrowed(
                conn, who, slots, current.count, new_start, new_end, ignore=booking_id
            )
            writes.update_booking(
                conn,
                booking_id,
                start=new_start,
                end=new_end,
                booked_end=True,
                devices=devices if devices != current.devices else None,
                borrowed=borrowed,
            )
            writes.record(
                conn,
                booking_id,
                caller.name,
                "change",
                start=new_start,
                end=new_end,
                previous_start=current.start,
                previous_end=current.end,
                devices=list(devices),
                borrowed=borrowed,
            )
            if new_end < current.end or new_start > current.start:
                self.waitlist.serve(conn, now)
            return self._view(conn, booking_id)

    def cancel(self, caller: Caller, booking_id: int) -> dict[str, Any]:
        now = ledger.utcnow()
        with self.store.write() as conn:
            row = reads.visible_row(conn, booking_id, caller)
            if row["state"] != State.BOOKED or rows.from_min(row["start_min"]) <= now:
                raise LedgerError(
                    "state",
                    "only a booking that has not started can be "
                    "cancelled; release a running one instead",
                )
            writes.update_booking(conn, booking_id, state=State.CANCELLED)
            writes.record(conn, booking_id, caller.name, "cancel")
            self.waitlist.serve(conn, now)
            return self._view(conn, booking_id)

    def release(self, caller: Caller, booking_id: int) -> dict[str, Any]:
        now = ledger.utcnow()
        with self.store.write() as conn:
            row = reads.visible_row(conn, booking_id, caller)
            if row["state"] not in HOLDING or rows.from_min(row["start_min"]) > now:
                raise LedgerError(
                    "state",
                    "only a booking that has started can be released; cancel a future one instead",
                )
            end = writes.release(conn, row, now)
            writes.record(conn, booking_id, caller.name, "release", end=end)
            self.waitlist.serve(conn, now)
            return self._view(conn, booking_id)
