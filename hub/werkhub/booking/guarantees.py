"""Guaranteed GPUs, borrowing and reclaim, inside the booking transaction.

An organisation may hold a guarantee of N GPUs of a type (``org_guarantees``; migration
0011): that many are its whenever it asks. Anyone may book beyond their organisation's
guarantee (or, outside every organisation, on a type others hold guarantees of) while GPUs
are idle; such a booking is **borrowed** as a whole and marked so. When an organisation
books within its guarantee and only other people's borrowed bookings stand in the way,
those are **reclaimed**: each ends at the new booking's start, which is at least
``warn_minutes`` from now, and its holder is notified at once; at that end their server
restarts without GPUs with its files kept, whatever ``booking.end_action`` says for
ordinary ends (the service asks ``reclaimed``). A booking made within a guarantee is never
reclaimed.

The organisation tables belong to ``werkhub.orgs`` (which builds on this package), so they
are read here by name.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, bindparam, text

from werkhub.booking import ledger
from werkhub.booking.ledger import Slot
from werkhub.booking.orgbudget import OrgBudget

#: one row whether or not the owner belongs to an organisation: the type's guaranteed
#: total, and the owner's organisation, its guarantee of the type and its budget
_STANDING = text(
    "SELECT (SELECT COALESCE(SUM(count), 0) FROM org_guarantees WHERE gpu_type = :gpu_type)"
    " AS total, o.id AS org_id, o.slug, COALESCE(g.count, 0) AS guarantee,"
    " o.budget_gpu_hours, o.budget_period"
    " FROM (SELECT 1 AS one) AS x"
    " LEFT JOIN org_members m ON m.user = :user"
    " LEFT JOIN orgs o ON o.id = m.org_id"
    " LEFT JOIN org_guarantees g ON g.org_id = m.org_id AND g.gpu_type = :gpu_type"
    " ORDER BY o.id LIMIT 1"
)
_MEMBERS = text("SELECT m.user, m.org_id FROM org_members m WHERE m.user IN :users").bindparams(
    bindparam("users", expanding=True)
)
_RECLAIMED = text(
    "SELECT DISTINCT booking_id FROM booking_audit WHERE action = 'reclaim' AND booking_id IN :ids"
).bindparams(bindparam("ids", expanding=True))
_BORROWED = text("SELECT id FROM bookings WHERE borrowed = :yes AND id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)


@dataclass(frozen=True)
class Standing:
    """The owner's organisation (None: outside every one), its guarantee of the type, and
    how many GPUs of the type are guaranteed to anyone; read with the organisation's
    budget, for :func:`werkhub.booking.orgbudget.check`."""

    org_id: int | None
    slug: str | None
    guarantee: int
    guaranteed_total: int
    budget_gpu_hours: float | None = None
    budget_period: str = "month"

    def budget(self) -> OrgBudget | None:
        """The organisation as the budget check takes it (None: outside every one)."""
        if self.org_id is None:
            return None
        return OrgBudget(self.org_id, self.slug or "", self.budget_gpu_hours, self.budget_period)


@dataclass(frozen=True)
class Reclaim:
    start: datetime
    end: datetime
    devices: tuple[str, ...]
    #: (slot, its new end or None when it is cancelled before it starts)
    cuts: tuple[tuple[Slot, datetime | None], ...]


def standing(conn: Connection, owner: str, gpu_type: str) -> Standing:
    """One statement: the create path reads it once for the guarantee and the budget."""
    row = conn.execute(_STANDING, {"user": owner, "gpu_type": gpu_type}).one()
    total = int(row.total or 0)
    if row.org_id is None:
        return Standing(None, None, 0, total)
    budget = None if row.budget_gpu_hours is None else float(row.budget_gpu_hours)
    return Standing(
        int(row.org_id), str(row.slug), int(row.guarantee), total, budget, str(row.budget_period)
    )


def peak(slots: Iterable[Slot], lo: datetime, hi: datetime, extra: int = 0) -> int:
    """The most GPUs ``slots`` hold at once within [lo, hi), plus ``extra`` held throughout."""
    edges: list[tuple[datetime, int]] = []
    for s in slots:
        a, b = max(s.start, lo), min(s.end, hi)
        if a < b:
            edges += [(a, s.count), (b, -s.count)]
    held = most = 0
    for _, change in sorted(edges, key=lambda e: (e[0], e[1])):
        held += change
        most = max(most, held)
    return most + extra


def org_of(conn: Connection, users: Iterable[str]) -> dict[str, int]:
    names = sorted(set(users))
    if not names:
        return {}
    return {r.user: int(r.org_id) for r in conn.execute(_MEMBERS, {"users": names})}


def borrowed(
    conn: Connection,
    who: Standing,
    slots: Sequence[Slot],
    count: int,
    begin: datetime,
    end: datetime,
    ignore: int | None = None,
) -> bool:
    """Whether a booking of ``count`` over [begin, end) goes beyond the owner's guarantee
    (outside every organisation: whether anyone holds guarantees of the type)."""
    if who.org_id is None:
        return who.guaranteed_total > 0
    members = org_of(conn, (s.user for s in slots))
    mine = [s for s in slots if members.get(s.user) == who.org_id and s.id != ignore]
    return peak(mine, begin, end, count) > who.guarantee


def plan(
    conn: Connection,
    pool: ledger.TypePool,
    slots: Sequence[Slot],
    who: Standing,
    gpu_type: str,
    count: int,
    begin: datetime,
    end: datetime,
    now: datetime,
    warn: timedelta,
) -> Reclaim | None:
    """Which borrowed bookings of other organisations (or of people outside every one) to
    end so a booking within the owner's guarantee fits, newest first; None when even all
    of them would not make room."""
    earliest = ledger.floor_minute(now + warn)
    if earliest < now + warn:
        earliest += timedelta(minutes=1)
    start = max(begin, earliest)
    finish = start + (end - begin)
    members = org_of(conn, (s.user for s in slots))
    others = [
        s for s in slots if s.end > start and s.start < finish and members.get(s.user) != who.org_id
    ]
    if not others:
        return None
    ids = [s.id for s in others]
    reclaimable = set(conn.execute(_BORROWED, {"yes": True, "ids": ids}).scalars())
    candidates = sorted((s for s in others if s.id in reclaimable), key=lambda s: -s.id)
    cut: list[tuple[Slot, datetime | None]] = []
    remaining = list(slots)
    for slot in candidates:
        new_end = start if slot.start < start else None
        cut.append((slot, new_end))
        remaining = [s for s in remaining if s.id != slot.id]
        if new_end is not None:
            remaining.append(slot.model_copy(update={"end": new_end}))
        devices = ledger.choose_devices(pool, remaining, gpu_type, count, start, finish)
        if devices is not None:
            return Reclaim(start, finish, devices, tuple(cut))
    return None


def minutes_until(moment: datetime, now: datetime) -> int:
    return max(0, math.ceil((moment - now).total_seconds() / 60))


def reclaim_message(
    slot: Slot, org: str, new_end: datetime | None, now: datetime, tz: ZoneInfo
) -> str:
    """What the holder of a reclaimed booking is told (the notification, and the warning
    in JupyterLab): by whom, when, and what happens to their server."""
    what = f"booking #{slot.id}, {slot.count} x {slot.gpu_type}"
    if new_end is None:
        return (
            f"Your borrowed GPUs ({what}) are reclaimed by organisation '{org}' before they "
            "start: the booking is cancelled."
        )
    return (
        f"Your borrowed GPUs ({what}) are reclaimed by organisation '{org}' at "
        f"{new_end.astimezone(tz):%H:%M %Z} (in {minutes_until(new_end, now)} min); "
        "the server then restarts without GPUs, files are kept. Save your work."
    )


def reclaimed(reader: Engine, ids: Collection[int]) -> set[int]:
    """Which of these bookings a reclaim ended: their servers restart without GPUs (files
    kept) at the end, even where ``booking.end_action`` stops servers at ordinary ends."""
    if not ids:
        return set()
    with reader.connect() as conn:
        return {int(i) for i in conn.execute(_RECLAIMED, {"ids": sorted(ids)}).scalars()}
