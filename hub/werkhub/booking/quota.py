"""Booking policies and GPU-hour quotas: pure rules, standard library and pydantic only.

Policies come from werkhub.yaml: a default, one per group and per-user overrides. A user
in several groups gets, for each limit, the most generous value among their groups; a
per-user override wins over everything. ``None`` means "no limit".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from werkhub.booking.ledger import CHARGED, LedgerError, Slot, WaitEntry, overlaps

WEEK = timedelta(days=7)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_hours_per_week: float | None = Field(default=None, ge=0)
    week: Literal["rolling", "calendar"] = "rolling"
    max_booking_hours: float | None = Field(default=None, gt=0, le=744)
    max_advance_days: float | None = Field(default=None, ge=0, le=366)
    max_concurrent_gpus: int | None = Field(default=None, ge=0)
    allowed_gpu_types: list[str] | None = None


class PolicySet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Policy = Field(
        default_factory=lambda: Policy(
            gpu_hours_per_week=40,
            max_booking_hours=12,
            max_advance_days=14,
            max_concurrent_gpus=2,
        )
    )
    groups: dict[str, Policy] = Field(default_factory=dict)
    users: dict[str, Policy] = Field(default_factory=dict)

    def for_user(self, user: str, groups: Iterable[str]) -> Policy:
        if user in self.users:
            return self.users[user]
        mine = [self.groups[g] for g in groups if g in self.groups]
        return combine(mine) if mine else self.default


def combine(mine: Sequence[Policy]) -> Policy:
    """The policy of someone in several groups: the most generous value of each limit."""
    return Policy(
        gpu_hours_per_week=_most(p.gpu_hours_per_week for p in mine),
        week=mine[0].week,
        max_booking_hours=_most(p.max_booking_hours for p in mine),
        max_advance_days=_most(p.max_advance_days for p in mine),
        max_concurrent_gpus=_most(p.max_concurrent_gpus for p in mine),
        allowed_gpu_types=_union(p.allowed_gpu_types for p in mine),
    )


class LayeredPolicies:
    """The configured policies under those organisations' admins set (kept in the
    database and handed in with :meth:`replace`). The most specific wins: an
    organisation's policy for the user, then its policies for the user's groups
    (combined as above), then the configured ones."""

    def __init__(self, configured: PolicySet) -> None:
        self.configured = configured
        self._users: Mapping[str, Policy] = {}
        self._groups: Mapping[str, Policy] = {}

    def replace(self, users: Mapping[str, Policy], groups: Mapping[str, Policy]) -> None:
        """Swap in a new snapshot of the organisations' policies (one assignment each,
        so a reader sees the old or the new one)."""
        self._users, self._groups = dict(users), dict(groups)

    def for_user(self, user: str, groups: Iterable[str]) -> Policy:
        return self.explain(user, groups)[0]

    def explain(self, user: str, groups: Iterable[str]) -> tuple[Policy, str]:
        """The policy and where it comes from: ``organisation user``, ``organisation
        group <name>[, ...]`` or ``configuration``."""
        found = self._users.get(user)
        if found is not None:
            return found, "organisation user"
        names = sorted({g for g in groups if g in self._groups})
        if names:
            source = f"organisation group {', '.join(names)}"
            return combine([self._groups[g] for g in names]), source
        return self.configured.for_user(user, groups), "configuration"

    def model_dump(self, **kwargs: object) -> dict[str, object]:
        """The configured policies (what ``GET /api/quota/policies`` lists)."""
        return self.configured.model_dump(**kwargs)  # type: ignore[arg-type]


def _most(values: Iterable[float | None]) -> float | None:
    collected = list(values)
    if any(v is None for v in collected):
        return None
    return max(v for v in collected if v is not None)


def _union(values: Iterable[list[str] | None]) -> list[str] | None:
    merged: set[str] = set()
    for value in values:
        if value is None:
            return None
        merged.update(value)
    return sorted(merged)


def gpu_hours(slot: Slot, start: datetime, end: datetime) -> float:
    """GPU-hours of ``slot`` that fall into [start, end)."""
    lo, hi = max(slot.start, start), min(slot.end, end)
    if hi <= lo:
        return 0.0
    return slot.count * (hi - lo).total_seconds() / 3600


def week_windows(
    start: datetime, end: datetime, policy: Policy, tz: ZoneInfo, others: Sequence[Slot]
) -> list[tuple[datetime, datetime]]:
    """Every quota window that a booking over [start, end) touches and that could peak.

    Calendar weeks run Monday 00:00 to Monday 00:00 in the user's time zone (so a week
    with a daylight-saving change is 167 or 169 hours long). For rolling weeks the most
    loaded 7-day window starts or ends at some booking boundary, so those are checked.
    """
    if policy.week == "calendar":
        local = start.astimezone(tz)
        monday = (local - timedelta(days=local.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        windows = []
        while monday.astimezone(start.tzinfo) < end:
            nxt = (monday.replace(tzinfo=None) + WEEK).replace(tzinfo=tz)
            windows.append((monday.astimezone(start.tzinfo), nxt.astimezone(start.tzinfo)))
            monday = nxt
        return windows
    bounds = {start, end}
    for slot in others:
        if overlaps(slot.start, slot.end, start - WEEK, end + WEEK):
            bounds.update((slot.start, slot.end))
    windows = set()
    for b in bounds:
        for lo in (b, b - WEEK):
            if overlaps(lo, lo + WEEK, start, end):
                windows.add((lo, lo + WEEK))
    return sorted(windows)


def charged(slots: Iterable[Slot], user: str, ignore: int | None = None) -> list[Slot]:
    return [s for s in slots if s.user == user and s.state in CHARGED and s.id != ignore]


def check_policy(
    policy: Policy,
    tz: ZoneInfo,
    user: str,
    gpu_type: str,
    count: int,
    start: datetime,
    end: datetime,
    now: datetime,
    slots: Sequence[Slot],
    *,
    ignore: int | None = None,
    check_advance: bool = True,
) -> None:
    """Raise LedgerError("policy") naming the limit a booking of [start, end) breaks."""
    if policy.allowed_gpu_types is not None and gpu_type not in policy.allowed_gpu_types:
        allowed = ", ".join(policy.allowed_gpu_types) or "none"
        raise LedgerError(
            "policy",
            f"your policy does not allow {gpu_type} (allowed: {allowed})",
            limit="allowed_gpu_types",
            allowed=policy.allowed_gpu_types,
        )
    hours = (end - start).total_seconds() / 3600
    if policy.max_booking_hours is not None and hours > policy.max_booking_hours:
        raise LedgerError(
            "policy",
            f"a booking may last at most {policy.max_booking_hours:g} h (this one: {hours:g} h)",
            limit="max_booking_hours",
            value=policy.max_booking_hours,
        )
    if (
        check_advance
        and policy.max_advance_days is not None
        and start > now + timedelta(days=policy.max_advance_days)
    ):
        raise LedgerError(
            "policy",
            f"bookings may start at most {policy.max_advance_days:g} days ahead",
            limit="max_advance_days",
            value=policy.max_advance_days,
        )
    mine = charged(slots, user, ignore)
    if policy.max_concurrent_gpus is not None:
        peak = count + peak_concurrent([s for s in mine if s.state != "ended"], start, end)
        if peak > policy.max_concurrent_gpus:
            raise LedgerError(
                "policy",
                f"at most {policy.max_concurrent_gpus} GPU(s) at the same time; "
                f"this booking would make it {peak}",
                limit="max_concurrent_gpus",
                value=policy.max_concurrent_gpus,
            )
    if policy.gpu_hours_per_week is not None:
        new = Slot(
            id=-1,
            user=user,
            gpu_type=gpu_type,
            count=count,
            start=start,
            end=end,
            devices=(),
            state="booked",
        )
        for lo, hi in week_windows(start, end, policy, tz, mine):
            used = sum(gpu_hours(s, lo, hi) for s in mine)
            wanted = gpu_hours(new, lo, hi)
            if used + wanted > policy.gpu_hours_per_week + 1e-9:
                remaining = max(0.0, policy.gpu_hours_per_week - used)
                raise LedgerError(
                    "policy",
                    f"weekly quota of {policy.gpu_hours_per_week:g} GPU-hours exceeded: "
                    f"{remaining:.2f} left in the week from {lo.astimezone(tz):%Y-%m-%d %H:%M}, "
                    f"this booking needs {wanted:.2f}",
                    limit="gpu_hours_per_week",
                    value=policy.gpu_hours_per_week,
                    remaining=round(remaining, 4),
                    window_start=lo,
                    window_end=hi,
                )


def admits(
    policy: Policy,
    tz: ZoneInfo,
    entry: WaitEntry,
    start: datetime,
    now: datetime,
    slots: Sequence[Slot],
    promised: Sequence[Slot] = (),
) -> bool:
    """Whether a waitlisted request may be granted from ``start``: the owner's policy
    allows it next to their bookings (``slots``) and to what this pass of the waitlist
    already promised them (``promised`` slots with ids < 0). How far ahead it starts is
    not checked again: that was checked when the request was queued."""
    mine = [*slots, *(s for s in promised if s.id < 0 and s.user == entry.user)]
    try:
        check_policy(
            policy,
            tz,
            entry.user,
            entry.gpu_type,
            entry.count,
            start,
            start + entry.duration,
            now,
            mine,
            check_advance=False,
        )
    except LedgerError:
        return False
    return True


def peak_concurrent(slots: Iterable[Slot], start: datetime, end: datetime) -> int:
    """Largest number of GPUs held at once by ``slots`` inside [start, end)."""
    events: list[tuple[datetime, int]] = []
    for s in slots:
        if overlaps(s.start, s.end, start, end):
            events.append((max(s.start, start), s.count))
            events.append((min(s.end, end), -s.count))
    peak = level = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level += delta
        peak = max(peak, level)
    return peak


def remaining_quota(
    policy: Policy, tz: ZoneInfo, user: str, slots: Sequence[Slot], now: datetime
) -> dict[str, object]:
    """What a booking starting now could still use: the fullest quota window around now."""
    mine = charged(slots, user)
    windows = week_windows(now, now + timedelta(minutes=1), policy, tz, mine)
    lo, hi = max(windows, key=lambda w: sum(gpu_hours(s, *w) for s in mine))
    used = sum(gpu_hours(s, lo, hi) for s in mine)
    limit = policy.gpu_hours_per_week
    return {
        "gpu_hours_per_week": limit,
        "week": policy.week,
        "window_start": lo,
        "window_end": hi,
        "booked_gpu_hours": round(used, 4),
        "remaining_gpu_hours": None if limit is None else round(max(0.0, limit - used), 4),
    }
