"""Five-field cron expressions in a time zone, correct across daylight-saving changes.

Standard library only (pure). Fields: minute (0-59), hour (0-23), day of month (1-31),
month (1-12 or jan-dec), day of week (0-7 or sun-sat; 0 and 7 are Sunday). Each field is
``*``, a number or name, a range ``a-b``, a step ``*/n`` or ``a-b/n`` or ``a/n``, or a comma
list of those. Shorthands: ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``), ``@hourly``.

As in Vixie cron, when both day fields are restricted (neither starts with ``*``) a day
matches if EITHER matches; otherwise both must.

Daylight saving (what a person expects of "every day at 06:00 Europe/Berlin"):

* Fixed-hour jobs (the hour field is not every hour) fire once per local wall time. A wall
  time skipped by spring-forward (02:30 on the last Sunday of March in Berlin) fires once,
  at the first instant after the gap (03:00 local). A wall time that occurs twice at
  fall-back fires once, at its first occurrence.
* Jobs whose hour field is every hour (``@hourly``, ``*/15 * * * *``) follow real time:
  nothing fires in the skipped hour, and the repeated hour fires twice, so an hourly job
  fires every real hour.

All instants going in and out are aware datetimes; results are in UTC.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from werkhub.jobs.spec import SpecError

FIELD = "schedule.cron"

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# name, low, high, names
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)

#: how far ahead a schedule is searched (covers 29 February across a skipped leap year)
HORIZON_DAYS = 366 * 9

_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30}
_MONTH_DAYS[12] = 31


def _fail(message: str) -> SpecError:
    return SpecError(FIELD, message)


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        allowed = f"a number {low}-{high}"
        if names:
            allowed += f" or a name ({', '.join(list(names)[:3])}, ...)"
        raise _fail(f"{name}: '{text}' is not {allowed}")
    number = int(text)
    if not low <= number <= high:
        raise _fail(f"{name}: {number} is out of range {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    if not text:
        raise _fail(f"{name}: empty")
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _fail(f"{name}: empty item in the list '{text}'")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _fail(f"{name}: step '{step_text}' in '{part}' must be a whole number >= 1")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, name, low, high, names)
            end = _value(last, name, low, high, names)
            if start > end:
                raise _fail(f"{name}: range '{base}' runs backwards ({start} > {end})")
        else:
            start = _value(base, name, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; build it with :meth:`Cron.parse`."""

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_or: bool  # both day fields restricted: a day matches if either matches

    @classmethod
    def parse(cls, expr: str) -> Cron:
        """Parse ``expr``; raises SpecError("schedule.cron", message) naming the field."""
        if not isinstance(expr, str) or not expr.strip():
            raise _fail("empty; expected 5 fields 'minute hour day-of-month month day-of-week'")
        text = expr.strip()
        if text.startswith("@"):
            if text.lower() not in _SHORTHANDS:
                raise _fail(
                    f"unknown shorthand '{text}'; allowed: {', '.join(sorted(_SHORTHANDS))}"
                )
            text = _SHORTHANDS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise _fail(
                f"expected 5 fields 'minute hour day-of-month month day-of-week', "
                f"got {len(parts)} in '{expr.strip()}'"
            )
        sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        minutes, hours, days, months, weekdays = sets
        weekdays = frozenset(d % 7 for d in weekdays)
        day_or = not parts[2].startswith("*") and not parts[4].startswith("*")
        cron = cls(
            expr=expr.strip(),
            minutes=tuple(sorted(minutes)),
            hours=tuple(sorted(hours)),
            days=days,
            months=months,
            weekdays=weekdays,
            day_or=day_or,
        )
        cron._check_possible(restricted_weekday=not parts[4].startswith("*"))
        return cron

    def _check_possible(self, restricted_weekday: bool) -> None:
        if restricted_weekday and self.day_or:
            return
        if any(day <= _MONTH_DAYS[m] for m in self.months for day in self.days):
            return
        names = ", ".join(calendar.month_name[m] for m in sorted(self.months))
        raise _fail(f"day of month {min(self.days)} never occurs in {names}; it would never fire")

    @property
    def every_hour(self) -> bool:
        """The hour field covers every hour: the job follows real time across DST."""
        return len(self.hours) == 24

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def next_fire(self, after_utc: datetime, tz: ZoneInfo) -> datetime:
        """The first fire strictly after ``after_utc`` (aware), as an aware UTC datetime."""
        if after_utc.tzinfo is None:
            raise ValueError("after_utc must be timezone-aware")
        after = after_utc.astimezone(UTC)
        day = after.astimezone(tz).date() - timedelta(days=1)
        for _ in range(HORIZON_DAYS):
            if self.matches_day(day):
                found = self._first_on(day, tz, after)
                if found is not None:
                    return found
            day += timedelta(days=1)
        raise _fail(f"'{self.expr}' does not fire within {HORIZON_DAYS // 366} years")

    def next_fires(self, after_utc: datetime, tz: ZoneInfo, n: int) -> list[datetime]:
        """The next ``n`` fires strictly after ``after_utc``."""
        fires: list[datetime] = []
        current = after_utc
        for _ in range(n):
            current = self.next_fire(current, tz)
            fires.append(current)
        return fires

    def fires_between(
        self, start_utc: datetime, end_utc: datetime, tz: ZoneInfo, limit: int = 10_000
    ) -> Iterator[datetime]:
        """Fires in (start_utc, end_utc], oldest first, at most ``limit``."""
        current = start_utc
        for _ in range(limit):
            current = self.next_fire(current, tz)
            if current > end_utc:
                return
            yield current

    def _first_on(self, day: date, tz: ZoneInfo, after: datetime) -> datetime | None:
        start = datetime.combine(day, time(), tz).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(UTC)
        if end <= after:
            return None
        steady = start.astimezone(tz).utcoffset() == end.astimezone(tz).utcoffset()
        best: datetime | None = None
        hours, first_minute = self.hours, -1
        local = after.astimezone(tz)
        if steady and local.date() == day:  # skip the wall times already past
            hours = tuple(h for h in hours if h >= local.hour)
            first_minute = local.minute
        # no instant of a wall time is later than the wall time minus the day's lower offset
        low_offset = min(start.astimezone(tz).utcoffset(), end.astimezone(tz).utcoffset())
        after_naive = after.replace(tzinfo=None) + low_offset
        high_offset = max(start.astimezone(tz).utcoffset(), end.astimezone(tz).utcoffset())
        for hour in hours:
            for minute in self.minutes:
                if hour == local.hour and minute < first_minute:
                    continue
                wall = datetime.combine(day, time(hour, minute))
                if wall <= after_naive:
                    continue
                if best is not None and wall - high_offset > best.replace(tzinfo=None):
                    return best  # this and every later wall time is later than best
                for instant in self._instants(wall, tz):
                    if instant > after and (best is None or instant < best):
                        best = instant
                if steady and best is not None:
                    return best  # no offset change today: wall order is real order
        return best

    def _instants(self, wall: datetime, tz: ZoneInfo) -> list[datetime]:
        first = wall.replace(tzinfo=tz, fold=0)
        second = wall.replace(tzinfo=tz, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [first.astimezone(UTC)]
        exists = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
        if exists:  # fall-back: the wall time happens twice
            if self.every_hour:
                return [first.astimezone(UTC), second.astimezone(UTC)]
            return [first.astimezone(UTC)]
        if self.every_hour:  # spring-forward gap, real-time job: nothing to fire
            return []
        return [_gap_end(second.astimezone(UTC), first.astimezone(UTC), tz)]


def _gap_end(low: datetime, high: datetime, tz: ZoneInfo) -> datetime:
    """The transition instant (UTC) between ``low`` (before it) and ``high`` (after it)."""
    before = low.astimezone(tz).utcoffset()
    lo, hi = low, high
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def zone(name: str, field: str = "schedule.tz") -> ZoneInfo:
    """The time zone ``name`` (IANA, e.g. "Europe/Berlin"); SpecError naming ``field``."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise SpecError(
            field, f"'{name}' is not a known time zone (use an IANA name like Europe/Berlin)"
        ) from exc
