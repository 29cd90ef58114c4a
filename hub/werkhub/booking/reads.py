"""Loading bookings inside a transaction: rows, ledger slots, and the API's view of one.

Functions of an open connection, shared by every booking service; none writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from werkhub.booking import ledger, rows
from werkhub.booking.ledger import HOLDING, NotFound, Slot
from werkhub.booking.settings import Caller
from werkhub.booking.tables import audit, booking_units, bookings, ledger_spans

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


#: the columns a ledger ``Slot`` needs, with each held unit (one row per unit, in the
#: order the units were chosen; a booking that holds none comes once with ``unit`` NULL)
_SLOT_COLUMNS = (
    bookings.c.id,
    bookings.c.user,
    bookings.c.gpu_type,
    bookings.c.count,
    bookings.c.start_min,
    bookings.c.end_min,
    bookings.c.state,
    booking_units.c.unit,
)
_SLOT_JOIN = bookings.outerjoin(booking_units, booking_units.c.booking_id == bookings.c.id)


def slots(conn: Connection, *conditions: Any) -> list[Slot]:
    """Bookings matching ``conditions`` as ledger slots, in one statement."""
    query = (
        select(*_SLOT_COLUMNS)
        .select_from(_SLOT_JOIN)
        .where(*conditions)
        .order_by(bookings.c.id, booking_units.c.id)
    )
    return _to_slots(conn.execute(query).all())


def _to_slots(result: Iterable[Any]) -> list[Slot]:
    found: dict[int, tuple[Any, list[str]]] = {}
    for r in result:
        entry = found.get(r[0])
        if entry is None:
            entry = found[r[0]] = (r, [])
        if r[7] is not None:
            entry[1].append(r[7])
    return [
        Slot(
            id=r[0],
            user=r[1],
            gpu_type=r[2],
            count=r[3],
            start=rows.from_min(r[4]),
            end=rows.from_min(r[5]),
            devices=tuple(units),
            state=ledger.State(r[6]),
        )
        for r, units in found.values()
    ]


def longest(gpu_type: Any = None) -> Any:
    """The longest booking of ``gpu_type`` (a value or a bind parameter; of any type when
    None) in minutes, as a SQL expression evaluated once per statement: ``ledger_spans``,
    or the 31-day cap when the table knows nothing of the type."""
    if gpu_type is None:
        query = select(func.max(ledger_spans.c.longest_min))
    else:
        query = select(ledger_spans.c.longest_min).where(ledger_spans.c.gpu_type == gpu_type)
    return func.coalesce(query.scalar_subquery(), MAX_MIN)


def overlapping(start: Any, end: Any, lo: Any, hi: Any, gpu_type: Any = None) -> list[Any]:
    """Conditions for rows with [start, end) columns overlapping [lo, hi) (minutes, or
    bind parameters), searchable by an index on ``start``: a row that overlaps began at
    most the longest booking's length before ``lo``."""
    return [start < hi, start > lo - longest(gpu_type), end > lo]


def window(lo: datetime, hi: datetime, gpu_type: str | None = None) -> list[Any]:
    """Conditions for bookings overlapping [lo, hi), using the start index."""
    return overlapping(
        bookings.c.start_min, bookings.c.end_min, rows.to_min(lo), rows.to_min(hi), gpu_type
    )


def _windowed(*conditions: Any, gpu_type: Any = None) -> Any:
    """A slots statement built once (bound per call: ``lo``, ``hi`` in minutes): statement
    building cost more than the query itself on the create path."""
    lo, hi = bindparam("lo"), bindparam("hi")
    return (
        select(*_SLOT_COLUMNS)
        .select_from(_SLOT_JOIN)
        .where(
            *conditions,
            *overlapping(bookings.c.start_min, bookings.c.end_min, lo, hi, gpu_type),
        )
        .order_by(bookings.c.id, booking_units.c.id)
    )


_TYPE_SLOTS = _windowed(
    bookings.c.gpu_type == bindparam("gpu_type"),
    bookings.c.state.in_([s.value for s in HOLDING]),
    gpu_type=bindparam("gpu_type"),
)
_USER_SLOTS = _windowed(bookings.c.user == bindparam("user"))


def type_slots(conn: Connection, gpu_type: str, lo: datetime, hi: datetime) -> list[Slot]:
    """Bookings of ``gpu_type`` that hold devices somewhere in [lo, hi)."""
    bounds = {"gpu_type": gpu_type, "lo": rows.to_min(lo), "hi": rows.to_min(hi)}
    return _to_slots(conn.execute(_TYPE_SLOTS, bounds).all())


def user_slots(conn: Connection, user: str, lo: datetime, hi: datetime) -> list[Slot]:
    """Every booking of ``user`` overlapping [lo, hi), in any state."""
    bounds = {"user": user, "lo": rows.to_min(lo), "hi": rows.to_min(hi)}
    return _to_slots(conn.execute(_USER_SLOTS, bounds).all())


def row(conn: Connection, booking_id: int) -> dict[str, Any] | None:
    found = conn.execute(select(bookings).where(bookings.c.id == booking_id)).mappings().first()
    return dict(found) if found else None


def visible_row(conn: Connection, booking_id: int, caller: Caller) -> dict[str, Any]:
    """The booking's row if the caller may see it (theirs, or they are an admin)."""
    found = row(conn, booking_id)
    if found is None or (found["user"] != caller.name and not caller.admin):
        raise NotFound(f"no booking {booking_id}")
    return found


def view(conn: Connection, booking: dict[str, Any], simulated: frozenset[str]) -> dict[str, Any]:
    """A booking as the API shows it: times, devices, whether simulated, its audit trail."""
    held = devices(conn, [booking["id"]])[booking["id"]]
    trail = (
        conn.execute(select(audit).where(audit.c.booking_id == booking["id"]).order_by(audit.c.id))
        .mappings()
        .all()
    )
    return compose(booking, held, trail, simulated)


def compose(
    booking: Mapping[str, Any],
    held: Iterable[str],
    trail: Iterable[Mapping[str, Any]],
    simulated: frozenset[str],
) -> dict[str, Any]:
    """The API's view of a booking from its row, units and audit rows (no database)."""
    held = list(held)
    return {
        "id": booking["id"],
        "user": booking["user"],
        "gpu_type": booking["gpu_type"],
        "count": booking["count"],
        "start": rows.from_min(booking["start_min"]),
        "end": rows.from_min(booking["end_min"]),
        "booked_end": rows.from_min(booking["booked_end_min"]),
        "state": booking["state"],
        "kind": booking.get("kind") or "server",
        "borrowed": bool(booking.get("borrowed")),
        "devices": held,
        "simulated": any(d in simulated for d in held),
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
