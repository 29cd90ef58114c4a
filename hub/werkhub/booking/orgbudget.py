"""An organisation's GPU-hour budget, checked inside the booking transaction.

An organisation may have a budget of GPU-hours per calendar month (or ISO week) in the
site's time zone (``orgs.budget_gpu_hours``, ``orgs.budget_period``; migration 0010). Every
booking of a member counts with its current length (a release gives the rest back) in each
period it touches; a create, change or waitlist grant that would take the organisation past
its budget in any period is refused, naming the period and what is left.

The organisation tables belong to ``werkhub.orgs`` (which builds on this package), so they
are read here by name. On PostgreSQL the organisation's row is locked for the rest of the
transaction, so two members booking at once cannot both take the last hours; SQLite's
writer lock already serialises writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from werkhub.booking import rows
from werkhub.booking.ledger import LedgerError

_ORG = text(
    "SELECT o.id, o.slug, o.budget_gpu_hours, o.budget_period FROM orgs o "
    "JOIN org_members m ON m.org_id = o.id WHERE m.user = :user"
)
_LOCK = text("SELECT id FROM orgs WHERE id = :org_id FOR UPDATE")
#: the GPU-minutes an organisation's bookings take inside [lo, hi), summed by the database
_MINUTES = text(
    "SELECT COALESCE(SUM(b.count * ("
    "CASE WHEN b.end_min < :hi THEN b.end_min ELSE :hi END - "
    "CASE WHEN b.start_min > :lo THEN b.start_min ELSE :lo END)), 0) FROM bookings b "
    "JOIN org_members m ON m.user = b.user "
    "WHERE m.org_id = :org_id AND b.state <> 'cancelled' AND b.id <> :ignore "
    "AND b.start_min < :hi AND b.end_min > :lo"
)


def period_start(moment: datetime, period: str, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    if period == "week":
        day = local - timedelta(days=local.weekday())
        return day.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_period(start: datetime, period: str) -> datetime:
    if period == "week":
        return (start + timedelta(days=7)).replace(tzinfo=start.tzinfo)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


def periods(begin: datetime, finish: datetime, period: str, tz: ZoneInfo) -> list[tuple]:
    """The periods [lo, hi) that [begin, finish) touches."""
    found = []
    lo = period_start(begin, period, tz)
    while lo < finish:
        hi = next_period(lo, period)
        found.append((lo, hi))
        lo = hi
    return found


@dataclass(frozen=True)
class OrgBudget:
    """A user's organisation and its budget (``budget_gpu_hours`` None: no budget)."""

    id: int
    slug: str
    budget_gpu_hours: float | None
    budget_period: str


#: ``check``'s ``org`` when the caller has not read the user's organisation yet
UNREAD = OrgBudget(-1, "", None, "")


def check(
    conn: Connection,
    tz: ZoneInfo,
    user: str,
    count: int,
    begin: datetime,
    finish: datetime,
    ignore: int | None = None,
    *,
    org: OrgBudget | None = UNREAD,
) -> None:
    """Raise LedgerError("policy") when the booking would exceed the user's organisation's
    budget in a period it touches; nothing for users outside organisations or budgets.
    ``org``: the user's organisation where the caller read it already (None: outside
    every one), saving the look-up."""
    if org is UNREAD:
        found = conn.execute(_ORG, {"user": user}).first()
        org = OrgBudget(*found) if found is not None else None
    if org is None or org.budget_gpu_hours is None:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"org_id": org.id})
    for lo, hi in periods(begin, finish, org.budget_period, tz):
        lo_min, hi_min = rows.to_min(lo), rows.to_min(hi)
        taken = float(
            conn.execute(
                _MINUTES,
                {
                    "org_id": org.id,
                    "lo": lo_min,
                    "hi": hi_min,
                    "ignore": -1 if ignore is None else ignore,
                },
            ).scalar_one()
        )
        new = count * max(0, min(rows.to_min(finish), hi_min) - max(rows.to_min(begin), lo_min))
        budget_min = org.budget_gpu_hours * 60
        if taken + new > budget_min + 1e-9:
            left = max(0.0, budget_min - taken) / 60
            label = f"week of {lo:%Y-%m-%d}" if org.budget_period == "week" else f"{lo:%B %Y}"
            raise LedgerError(
                "policy",
                f"organisation '{org.slug}' has {left:.1f} of its {org.budget_gpu_hours:g} "
                f"GPU-hours left in {label}; this booking needs {new / 60:.1f}",
                limit="org_budget",
                left_hours=round(left, 2),
            )
