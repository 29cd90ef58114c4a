"""Booking operations: each is one database transaction that applies the ledger rules.

Writes on SQLite take the database write lock at BEGIN (see ``werkhub.db``); on
PostgreSQL every write transaction first takes one advisory lock, so rule checks and
inserts never interleave. Either way the database itself refuses overlapping promises
of a unit (exclusion constraint or trigger), so a bug here cannot double-book.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, and_, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from werkhub.booking import ledger, rows
from werkhub.booking.accounting import AccountingOps
from werkhub.booking.ledger import HOLDING, LedgerError, NotFound, Slot, State
from werkhub.booking.quota import check_policy
from werkhub.booking.settings import Caller, Settings
from werkhub.booking.spawn_ops import SpawnOps
from werkhub.booking.tables import audit, booking_units, bookings, notifications
from werkhub.booking.waitlist import WaitlistOps
from werkhub.db import writer_queue

MAX_MIN = rows.to_min(ledger.MAX_BOOKING + rows.EPOCH)  # longest booking, in minutes
LOCK_KEY = 727_274_001  # advisory lock of the ledger on PostgreSQL
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


class BookingManager(WaitlistOps, AccountingOps, SpawnOps):
    def __init__(self, writer: Engine, reader: Engine, settings: Settings) -> None:
        self.writer = writer
        self.reader = reader
        self.settings = settings
        self.postgres = writer.dialect.name == "postgresql"
        self._write_lock = writer_queue(writer)
        #: bumped after every write transaction; read caches compare against it
        self.version = 0
        self.read_cache: dict[Any, tuple[int, float, Any]] = {}

    # ---- transactions -------------------------------------------------------------
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

    # ---- loading ------------------------------------------------------------------
    def _devices(self, conn: Connection, ids: list[int]) -> dict[int, tuple[str, ...]]:
        found: dict[int, list[str]] = defaultdict(list)
        if ids:
            query = (
                select(booking_units.c.booking_id, booking_units.c.unit)
                .where(booking_units.c.booking_id.in_(ids))
                .order_by(booking_units.c.id)
            )
            for booking_id, unit in conn.execute(query):
                found[booking_id].append(unit)
        return {i: tuple(found[i]) for i in ids}

    def _slots(self, conn: Connection, *conditions: Any) -> list[Slot]:
        result = conn.execute(select(bookings).where(*conditions)).mappings().all()
        devices = self._devices(conn, [r["id"] for r in result])
        return [rows.slot(r, devices[r["id"]]) for r in result]

    def _window(self, lo: datetime, hi: datetime) -> list[Any]:
        """Conditions for bookings overlapping [lo, hi), using the start index."""
        lo_min, hi_min = rows.to_min(lo), rows.to_min(hi)
        return [
            bookings.c.start_min < hi_min,
            bookings.c.start_min > lo_min - MAX_MIN,
            bookings.c.end_min > lo_min,
        ]

    def _type_slots(
        self, conn: Connection, gpu_type: str, lo: datetime, hi: datetime
    ) -> list[Slot]:
        return self._slots(
            conn,
            bookings.c.gpu_type == gpu_type,
            bookings.c.state.in_(list(HOLDING)),
            *self._window(lo, hi),
        )

    def _user_slots(self, conn: Connection, user: str, lo: datetime, hi: datetime) -> list[Slot]:
        return self._slots(conn, bookings.c.user == user, *self._window(lo, hi))

    def _row(self, conn: Connection, booking_id: int) -> dict[str, Any] | None:
        row = conn.execute(select(bookings).where(bookings.c.id == booking_id)).mappings().first()
        return dict(row) if row else None

    def _visible_row(self, conn: Connection, booking_id: int, caller: Caller) -> dict[str, Any]:
        row = self._row(conn, booking_id)
        if row is None or (row["user"] != caller.name and not caller.admin):
            raise NotFound(f"no booking {booking_id}")
        return row

    def view(self, conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
        devices = self._devices(conn, [row["id"]])[row["id"]]
        trail = (
            conn.execute(select(audit).where(audit.c.booking_id == row["id"]).order_by(audit.c.id))
            .mappings()
            .all()
        )
        units = {u.id: u for u in self.settings.units}
        return {
            "id": row["id"],
            "user": row["user"],
            "gpu_type": row["gpu_type"],
            "count": row["count"],
            "start": rows.from_min(row["start_min"]),
            "end": rows.from_min(row["end_min"]),
            "booked_end": rows.from_min(row["booked_end_min"]),
            "state": row["state"],
            "devices": list(devices),
            "simulated": any(units[d].simulated for d in devices if d in units),
            "created": rows.from_ts(row["created"]),
            "updated": rows.from_ts(row["updated"]),
            "created_by": row["created_by"],
            "audit": [
                {
                    "at": rows.from_ts(a["at"]),
                    "actor": a["actor"],
                    "action": a["action"],
                    "detail": a["detail"],
                }
                for a in trail
            ],
        }

    # ---- helpers inside write transactions ------------------------------------------
    def _audit(
        self, conn: Connection, booking_id: int, actor: str, action: str, **detail: Any
    ) -> None:
        clean = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in detail.items()}
        conn.execute(
            insert(audit).values(
                booking_id=booking_id, at=ledger.now_ts(), actor=actor, action=action, detail=clean
            )
        )

    def _notify(
        self, conn: Connection, user: str, kind: str, message: str, booking_id: int | None = None
    ) -> None:
        conn.execute(
            insert(notifications).values(
                user=user,
                at=ledger.now_ts(),
                kind=kind,
                message=message,
                booking_id=booking_id,
                read=False,
            )
        )

    def _insert(
        self,
        conn: Connection,
        owner: str,
        gpu_type: str,
        count: int,
        start: datetime,
        end: datetime,
        devices: tuple[str, ...],
        actor: str,
        key: str | None = None,
        request_hash: str | None = None,
    ) -> int:
        now = ledger.now_ts()
        booking_id = conn.execute(
            insert(bookings)
            .values(
                user=owner,
                gpu_type=gpu_type,
                count=count,
                start_min=rows.to_min(start),
                end_min=rows.to_min(end),
                booked_end_min=rows.to_min(end),
                state=State.BOOKED.value,
                created=now,
                updated=now,
                created_by=actor,
                idempotency_key=key,
                request_hash=request_hash,
            )
            .returning(bookings.c.id)
        ).scalar_one()
        conn.execute(
            insert(booking_units),
            [
                {
                    "booking_id": booking_id,
                    "unit": d,
                    "start_min": rows.to_min(start),
                    "end_min": rows.to_min(end),
                    "holding": True,
                }
                for d in devices
            ],
        )
        self._audit(
            conn,
            booking_id,
            actor,
            "create",
            gpu_type=gpu_type,
            count=count,
            start=start,
            end=end,
            devices=list(devices),
            owner=owner,
        )
        return booking_id

    def _set(
        self,
        conn: Connection,
        booking_id: int,
        *,
        state: State | None = None,
        end: datetime | None = None,
        start: datetime | None = None,
        devices: tuple[str, ...] | None = None,
        booked_end: bool = False,
    ) -> None:
        values: dict[str, Any] = {"updated": ledger.now_ts()}
        unit_values: dict[str, Any] = {}
        if state is not None:
            values["state"] = state.value
            unit_values["holding"] = state in HOLDING
        if end is not None:
            values["end_min"] = unit_values["end_min"] = rows.to_min(end)
            if booked_end:
                values["booked_end_min"] = values["end_min"]
        if start is not None:
            values["start_min"] = unit_values["start_min"] = rows.to_min(start)
        conn.execute(update(bookings).where(bookings.c.id == booking_id).values(**values))
        if devices is not None:
            row = self._row(conn, booking_id)
            assert row is not None
            conn.execute(booking_units.delete().where(booking_units.c.booking_id == booking_id))
            conn.execute(
                insert(booking_units),
                [
                    {
                        "booking_id": booking_id,
                        "unit": d,
                        "start_min": row["start_min"],
                        "end_min": row["end_min"],
                        "holding": row["state"] in HOLDING,
                    }
                    for d in devices
                ],
            )
        elif unit_values:
            conn.execute(
                update(booking_units)
                .where(booking_units.c.booking_id == booking_id)
                .values(**unit_values)
            )

    # ---- validation ---------------------------------------------------------------
    def check_type(self, gpu_type: str, count: int) -> None:
        types = self.settings.gpu_types
        if gpu_type not in types:
            raise LedgerError(
                "invalid",
                f"unknown GPU type '{gpu_type}'; known: {', '.join(types)}",
                field="gpu_type",
            )
        most = ledger.max_per_node(self.settings.units, gpu_type)
        if count > most:
            raise LedgerError(
                "invalid",
                f"at most {most} x {gpu_type} fit on one node; a booking stays on one node",
                field="count",
            )

    def _conflict(
        self,
        conn: Connection,
        gpu_type: str,
        count: int,
        start: datetime,
        end: datetime,
        ignore: int | None = None,
    ) -> LedgerError:
        horizon = start + self.settings.search_horizon
        slots = self._type_slots(conn, gpu_type, start, horizon + (end - start))
        found = ledger.earliest_slot(
            self.settings.units, slots, gpu_type, count, end - start, start, horizon, ignore=ignore
        )
        earliest = None
        if found is not None:
            earliest = {"start": found[0], "end": found[0] + (end - start)}
        return LedgerError(
            "conflict",
            f"{count} x {gpu_type} are not free for the whole time asked for",
            earliest_free=earliest,
        )

    # ---- operations ---------------------------------------------------------------
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
    ) -> tuple[dict, bool]:
        """Book; returns (booking, replayed). ``start=None`` means now (on demand)."""
        if owner != caller.name and not caller.admin:
            raise LedgerError("policy", "only administrators book on behalf of others")
        if override and not caller.admin:
            raise LedgerError("policy", "only administrators may override policies")
        self.check_type(gpu_type, count)
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
            with self.write() as conn:
                if key is not None:
                    replay = self._replay(conn, owner, key, request_hash)
                    if replay is not None:
                        return replay, True
                if not override:
                    policy = self.settings.policies.for_user(owner, owner_groups)
                    mine = self._user_slots(
                        conn, owner, begin - timedelta(days=8), finish + timedelta(days=8)
                    )
                    check_policy(
                        policy, self.settings.tz, owner, gpu_type, count, begin, finish, now, mine
                    )
                slots = self._type_slots(conn, gpu_type, begin, finish)
                devices = ledger.choose_devices(
                    self.settings.units, slots, gpu_type, count, begin, finish
                )
                if devices is None:
                    raise self._conflict(conn, gpu_type, count, begin, finish)
                booking_id = self._insert(
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
                )
                return self.view(conn, self._row(conn, booking_id) or {}), False
        except IntegrityError:
            if key is not None:  # a concurrent request with the same key won the race
                with self.read() as conn:
                    replay = self._replay(conn, owner, key, request_hash)
                    if replay is not None:
                        return replay, True
            raise LedgerError(
                "conflict", f"{count} x {gpu_type} were just taken; try again", earliest_free=None
            ) from None

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
        return self.view(conn, dict(row))

    def get(self, caller: Caller, booking_id: int) -> dict[str, Any]:
        with self.read() as conn:
            return self.view(conn, self._visible_row(conn, booking_id, caller))

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
        with self.read() as conn:
            return [self.view(conn, dict(r)) for r in conn.execute(query).mappings()]

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
        with self.write() as conn:
            row = self._visible_row(conn, booking_id, caller)
            current = rows.slot(row, self._devices(conn, [booking_id])[booking_id])
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
                mine = self._user_slots(
                    conn, current.user, new_start - timedelta(days=8), new_end + timedelta(days=8)
                )
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
            slots = self._type_slots(conn, current.gpu_type, new_start, new_end)
            same = ledger.choose_devices(
                self.settings.units,
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
            self._set(
                conn,
                booking_id,
                start=new_start,
                end=new_end,
                booked_end=True,
                devices=devices if devices != current.devices else None,
            )
            self._audit(
                conn,
                booking_id,
                caller.name,
                "change",
                start=new_start,
                end=new_end,
                previous_start=current.start,
                previous_end=current.end,
                devices=list(devices),
            )
            if new_end < current.end or new_start > current.start:
                self._serve_waitlist(conn, now)
            return self.view(conn, self._row(conn, booking_id) or {})

    def cancel(self, caller: Caller, booking_id: int) -> dict[str, Any]:
        now = ledger.utcnow()
        with self.write() as conn:
            row = self._visible_row(conn, booking_id, caller)
            if row["state"] != State.BOOKED or rows.from_min(row["start_min"]) <= now:
                raise LedgerError(
                    "state",
                    "only a booking that has not started can be "
                    "cancelled; release a running one instead",
                )
            self._set(conn, booking_id, state=State.CANCELLED)
            self._audit(conn, booking_id, caller.name, "cancel")
            self._serve_waitlist(conn, now)
            return self.view(conn, self._row(conn, booking_id) or {})

    def release(self, caller: Caller, booking_id: int) -> dict[str, Any]:
        now = ledger.utcnow()
        with self.write() as conn:
            row = self._visible_row(conn, booking_id, caller)
            start = rows.from_min(row["start_min"])
            if row["state"] not in HOLDING or start > now:
                raise LedgerError(
                    "state",
                    "only a booking that has started can be released; cancel a future one instead",
                )
            cut = max(ledger.ceil_minute(now), start + ledger.MINUTE)
            end = min(cut, rows.from_min(row["end_min"]))
            self._set(conn, booking_id, state=State.RELEASED, end=end)
            self._close_usage(conn, booking_id, ledger.now_ts())
            self._audit(conn, booking_id, caller.name, "release", end=end)
            self._serve_waitlist(conn, now)
            return self.view(conn, self._row(conn, booking_id) or {})
