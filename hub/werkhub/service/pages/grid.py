"""Pure shaping of availability answers into a week grid (days x hours), in local time.

Standard library only; shared by the booking page. Times arrive as ISO strings or datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Cell:
    start: datetime  # local
    free: int | None  # None: outside the answered range
    past: bool


@dataclass(frozen=True)
class DayRow:
    day: datetime  # local midnight
    cells: list[Cell]


def _as_dt(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def week_start(now: datetime, tz: ZoneInfo) -> datetime:
    """Local midnight of today (aware, in ``tz``)."""
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def week_grid(
    steps: list[dict[str, Any]], tz: ZoneInfo, now: datetime, days: int = 7
) -> list[DayRow]:
    """One row per local day, one cell per local hour 0-23 with the free units then.

    On a day with a daylight-saving change an hour may be missing (spring) or counted once
    (autumn): cells are keyed by local wall-clock hour, the first answer wins.
    """
    free: dict[tuple[str, int], int] = {}
    for step in steps:
        local = _as_dt(step["start"]).astimezone(tz)
        free.setdefault((local.date().isoformat(), local.hour), int(step["free"]))
    first = week_start(now, tz)
    rows = []
    for d in range(days):
        day = (first + timedelta(days=d, hours=12)).replace(hour=0)
        cells = []
        for hour in range(24):
            start = day.replace(hour=hour)
            end_utc = start.astimezone(ZoneInfo("UTC")) + timedelta(hours=1)
            cells.append(
                Cell(
                    start=start,
                    free=free.get((day.date().isoformat(), hour)),
                    past=end_utc <= now,
                )
            )
        rows.append(DayRow(day=day, cells=cells))
    return rows
