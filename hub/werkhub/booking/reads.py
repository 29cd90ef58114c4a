"""Loading bookings inside a transaction: rows, ledger slots, and the API's view of one.

Functions of an open connection, shared by every booking service; none writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from werkhub.booking import ledger, rows
from werkhub.booking.ledger import HOLDING, NotFound, Slot, Unit
from werkhub.booking.settings import Caller
from werkhub.booking.tables import audit, booking_units, bookings

MAX_MIN = rows.to_min(ledger.MAX_BOOKING + rows.EPOCH)  # longest booking, in minutes


def devices(conn: Connection, ids: list[int]) -> dict[int, tuple[str, ...]]:
    """The units of each booking, in the order they were chosen."""
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


def slots(conn: Connection, *conditions: Any) -> list[Slot]:
    result = conn.execute(select(bookings).where(*conditions)).mappings().all()
    units = devices(conn, [r["id"] for r in result])
    return [rows.slot(r, units[r["id"]]) for r in result]


def window(lo: datetime, hi: datetime) -> list[Any]:
    """Conditions for bookings overlapping [lo, hi), using the start index."""
    lo_min, hi_min = rows.to_min(lo), rows.to_min(hi)
    return [
        bookings.c.start_min < hi_min,
        bookings.c.start_min > lo_min - MAX_MIN,
        bookings.c.end_min > lo_min,
    ]


def type_slots(conn: Connection, gpu_type: str, lo: datetime, hi: datetime) -> list[Slot]:
    """Bookings of ``gpu_type`` that hold devices somewhere in [lo, hi)."""
    return slots(
        conn,
        bookings.c.gpu_type == gpu_type,
        bookings.c.state.in_(list(HOLDING)),
        *window(lo, hi),
    )


def user_slots(conn: Connection, user: str, lo: datetime, hi: datetime) -> list[Slot]:
    """Every booking of ``user`` overlapping [lo, hi), in any state."""
    return slots(conn, bookings.c.user == user, *window(lo, hi))


def row(conn: Connection, booking_id: int) -> dict[str, Any] | None:
    found = conn.execute(select(bookings).where(bookings.c.id == booking_id)).mappings().first()
    return dict(found) if found else None


def visible_row(conn: Connection, booking_id: int, caller: Caller) -> dict[str, Any]:
    """The booking's row if the caller may see it (theirs, or they are an admin)."""
    found = row(conn, booking_id)
    if found is None or (found["user"] != caller.name and not caller.admin):
        raise NotFound(f"no booking {booking_id}")
    return found


def view(conn: Connection, booking: dict[str, Any], units: Iterable[Unit]) -> dict[str, Any]:
    """A booking as the API shows it: times, devices, whether simulated, its audit trail."""
    held = devices(conn, [booking["id"]])[booking["id"]]
    trail = (
        conn.execute(select(audit).where(audit.c.booking_id == booking["id"]).order_by(audit.c.id))
        .mappings()
        .all()
    )
    known = {u.id: u for u in units}
    return {
        "id": booking["id"],
        "user": booking["user"],
        "gpu_type": booking["gpu_type"],
        "count": booking["count"],
        "start": rows.from_min(booking["start_min"]),
        "end": rows.from_min(booking["end_min"]),
        "booked_end": rows.from_min(booking["booked_end_min"]),
        "state": booking["state"],
        "devices": list(held),
        "simulated": any(known[d].simulated for d in held if d in known),
        "created": rows.from_ts(booking["created"]),
        "updated": rows.from_ts(booking["updated"]),
        "created_by": booking["created_by"],
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
