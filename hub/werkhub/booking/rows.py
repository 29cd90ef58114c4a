"""Conversions between database rows and ledger values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from werkhub.booking.ledger import Slot, State, WaitEntry

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_min(moment: datetime) -> int:
    return int((moment - EPOCH).total_seconds() // 60)


def from_min(minutes: int) -> datetime:
    return EPOCH + timedelta(minutes=minutes)


#: "HH:MM:00+00:00" of every minute of a day, for ``iso_steps``
_CLOCK = [f"{h:02d}:{m:02d}:00+00:00" for h in range(24) for m in range(60)]


def iso_steps(first: int, step: int, count: int) -> list[str]:
    """``from_min(first + i * step).isoformat()`` for i < count, without a datetime per
    step: a week of hours rendered that way cost more than answering the query."""
    days: dict[int, str] = {}
    out = []
    for minute in range(first, first + step * count, step):
        day, rest = divmod(minute, 24 * 60)
        date = days.get(day)
        if date is None:
            date = days[day] = f"{(EPOCH + timedelta(days=day)).date().isoformat()}T"
        out.append(date + _CLOCK[rest])
    return out


def from_ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def slot(row: Mapping[str, Any], devices: tuple[str, ...]) -> Slot:
    return Slot(
        id=row["id"],
        user=row["user"],
        gpu_type=row["gpu_type"],
        count=row["count"],
        start=from_min(row["start_min"]),
        end=from_min(row["end_min"]),
        devices=devices,
        state=State(row["state"]),
    )


def wait_entry(row: Mapping[str, Any]) -> WaitEntry:
    return WaitEntry(
        id=row["id"],
        user=row["user"],
        gpu_type=row["gpu_type"],
        count=row["count"],
        duration=timedelta(minutes=row["duration_min"]),
        not_before=from_min(row["not_before_min"]),
        latest_start=from_min(row["latest_start_min"]),
    )
