"""Writing inside a write transaction: booking rows and their units, the audit trail,
notices to users, and segments of GPU time used. Shared by every booking service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from werkhub.booking import ledger, reads, rows
from werkhub.booking.ledger import HOLDING, State
from werkhub.booking.tables import (
    audit,
    booking_units,
    bookings,
    ledger_spans,
    notifications,
    usage,
)


def record(
    conn: Connection, booking_id: int, actor: str, action: str, **detail: Any
) -> dict[str, Any]:
    """One entry of the booking's audit trail (datetimes stored as ISO 8601); returns the
    values written."""
    clean = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in detail.items()}
    values = {
        "booking_id": booking_id,
        "at": ledger.now_ts(),
        "actor": actor,
        "action": action,
        "detail": clean,
    }
    conn.execute(_AUDIT, values)
    return values


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
    kind: str = "server",
    borrowed: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A new booking holding ``devices`` for [start, end); returns its row (with its id)
    and its audit trail as written, so the caller can answer without reading them back."""
    now = ledger.now_ts()
    row: dict[str, Any] = {
        "user": owner,
        "gpu_type": gpu_type,
        "count": count,
        "start_min": rows.to_min(start),
        "end_min": rows.to_min(end),
        "booked_end_min": rows.to_min(end),
        "state": State.BOOKED.value,
        "created": now,
        "updated": now,
        "created_by": actor,
        "idempotency_key": key,
        "request_hash": request_hash,
        "kind": kind,
        "borrowed": borrowed,
    }
    row["id"] = conn.execute(_BOOKING, row).scalar_one()
    _hold_units(conn, row["id"], gpu_type, devices, row["start_min"], row["end_min"], True)
    entry = record(
        conn,
        row["id"],
        actor,
        "create",
        gpu_type=gpu_type,
        count=count,
        start=start,
        end=end,
        devices=list(devices),
        owner=owner,
    )
    return row, [entry]


def update_booking(
    conn: Connection,
    booking_id: int,
    *,
    state: State | None = None,
    end: datetime | None = None,
    start: datetime | None = None,
    devices: tuple[str, ...] | None = None,
    booked_end: bool = False,
    borrowed: bool | None = None,
) -> None:
    """Change a booking's state, times, devices or borrowed flag; its unit rows follow."""
    values: dict[str, Any] = {"updated": ledger.now_ts()}
    if borrowed is not None:
        values["borrowed"] = borrowed
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
            current["gpu_type"],
            devices,
            current["start_min"],
            current["end_min"],
            current["state"] in HOLDING,
        )
    elif unit_values:
        if "start_min" in unit_values or "end_min" in unit_values:
            current = reads.row(conn, booking_id)
            assert current is not None
            stretch(conn, current["gpu_type"], current["end_min"] - current["start_min"])
        conn.execute(
            update(booking_units)
            .where(booking_units.c.booking_id == booking_id)
            .values(**unit_values)
        )


def _upsert_span(dialect: Any) -> Any:
    statement = dialect.insert(ledger_spans)
    return statement.on_conflict_do_update(
        index_elements=[ledger_spans.c.gpu_type],
        set_={"longest_min": statement.excluded.longest_min},
        where=ledger_spans.c.longest_min < statement.excluded.longest_min,
    )


#: statements built once, bound per call (building them cost more than running them)
_AUDIT = insert(audit)
_BOOKING = insert(bookings).returning(bookings.c.id)
_UNITS = insert(booking_units)
_SPAN = {"sqlite": _upsert_span(sqlite), "postgresql": _upsert_span(postgresql)}


def stretch(conn: Connection, gpu_type: str, minutes: int) -> None:
    """Record that a booking of ``gpu_type`` lasts ``minutes`` (``ledger_spans`` keeps the
    longest; it never shrinks). Every write of a booking's times goes through here."""
    conn.execute(_SPAN[conn.dialect.name], {"gpu_type": gpu_type, "longest_min": minutes})


def _hold_units(
    conn: Connection,
    booking_id: int,
    gpu_type: str,
    devices: tuple[str, ...],
    start_min: int,
    end_min: int,
    holding: bool,
) -> None:
    stretch(conn, gpu_type, end_min - start_min)
    conn.execute(
        _UNITS,
        [
            {
                "booking_id": booking_id,
                "gpu_type": gpu_type,
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
