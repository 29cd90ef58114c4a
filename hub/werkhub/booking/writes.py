"""Writing inside a write transaction: booking rows and their units, the audit trail,
notices to users, and segments of GPU time used. Shared by every booking service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from werkhub.booking import ledger, reads, rows
from werkhub.booking.ledger import HOLDING, State
from werkhub.booking.tables import audit, booking_units, bookings, notifications, usage


def record(conn: Connection, booking_id: int, actor: str, action: str, **detail: Any) -> None:
    """One entry of the booking's audit trail (datetimes stored as ISO 8601)."""
    clean = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in detail.items()}
    conn.execute(
        insert(audit).values(
            booking_id=booking_id, at=ledger.now_ts(), actor=actor, action=action, detail=clean
        )
    )


def notify(
    conn: Connection, user: str, kind: str, message: str, booking_id: int | None = None
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


def insert_booking(
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
    """A new booking holding ``devices`` for [start, end); returns its id."""
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
    _hold_units(conn, booking_id, devices, rows.to_min(start), rows.to_min(end), True)
    record(
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


def update_booking(
    conn: Connection,
    booking_id: int,
    *,
    state: State | None = None,
    end: datetime | None = None,
    start: datetime | None = None,
    devices: tuple[str, ...] | None = None,
    booked_end: bool = False,
) -> None:
    """Change a booking's state, times or devices; its unit rows follow."""
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
        current = reads.row(conn, booking_id)
        assert current is not None
        conn.execute(booking_units.delete().where(booking_units.c.booking_id == booking_id))
        _hold_units(
            conn,
            booking_id,
            devices,
            current["start_min"],
            current["end_min"],
            current["state"] in HOLDING,
        )
    elif unit_values:
        conn.execute(
            update(booking_units)
            .where(booking_units.c.booking_id == booking_id)
            .values(**unit_values)
        )


def _hold_units(
    conn: Connection,
    booking_id: int,
    devices: tuple[str, ...],
    start_min: int,
    end_min: int,
    holding: bool,
) -> None:
    conn.execute(
        insert(booking_units),
        [
            {
                "booking_id": booking_id,
                "unit": d,
                "start_min": start_min,
                "end_min": end_min,
                "holding": holding,
            }
            for d in devices
        ],
    )


def open_usage(conn: Connection, booking: dict[str, Any], stamp: float) -> None:
    """The booking's devices are in use from ``stamp`` (once: an open segment stays)."""
    already = conn.execute(
        select(usage.c.id).where(usage.c.booking_id == booking["id"], usage.c.end.is_(None))
    ).first()
    if already is None:
        conn.execute(
            insert(usage).values(
                booking_id=booking["id"],
                user=booking["user"],
                count=booking["count"],
                start=stamp,
                end=None,
            )
        )


def close_usage(conn: Connection, booking_id: int, stamp: float) -> None:
    conn.execute(
        update(usage)
        .where(and_(usage.c.booking_id == booking_id, usage.c.end.is_(None)))
        .values(end=stamp)
    )


def release(conn: Connection, booking: dict[str, Any], now: datetime) -> datetime:
    """End a started booking early (its user, or the idle policy): it stops holding its
    devices at the next minute, at least one minute after its start; GPU time used
    stops counting now. Returns the new end."""
    end = ledger.release_end(
        rows.from_min(booking["start_min"]), rows.from_min(booking["end_min"]), now
    )
    update_booking(conn, booking["id"], state=State.RELEASED, end=end)
    close_usage(conn, booking["id"], ledger.now_ts())
    return end
