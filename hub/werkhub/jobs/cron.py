"""Five-field cron expressions in a time zone, evaluated by cronsim (pure).

Fields: minute (0-59), hour (0-23), day of month (1-31, ``L`` for the last), month (1-12
or jan-dec), day of week (0-7 or sun-sat; 0 and 7 are Sunday; ``5L`` for the last Friday
of the month, ``1#2`` for the second Monday). Each field is ``*``, a number or name, a
range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those. Shorthands
(``@daily`` and so on) are spelled out here before cronsim reads the expression.

Semantics are cronsim's, which follows Debian cron:

* Both day fields restricted (neither starts with ``*``): a day matches if EITHER does.
* Daylight saving: an expression whose minute and hour fields both name fixed values
  (``30 2 * * *``, ``0,30 2 * * *``) fires once per wall time: a time skipped at
  spring-forward fires at the end of the gap (03:00 in Berlin), a time repeated at
  fall-back fires at its first occurrence. An expression whose minute or hour field starts
  with ``*`` (``@hourly``, ``*/15 2 * * *``) follows real time: nothing fires in the
  skipped hour and the repeated hour fires twice.

Instants going in and out are aware datetimes; results are in UTC.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from werkhub.jobs.errors import SpecError

FIELD = "schedule.cron"
SHAPE = "5 fields 'minute hour day-of-month month day-of-week'"

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# cronsim's field name (as in its "Bad <field>" message), our name, the values allowed
_FIELDS = (
    ("minute", "minute", "0-59"),
    ("hour", "hour", "0-23"),
    ("day-of-month", "day of month", "1-31 or L"),
    ("month", "month", "1-12 or jan-dec"),
    ("day-of-week", "day of week", "0-7 or sun-sat (0 and 7 are Sunday), 5L, 1#2"),
)
_FORMS = "*, a range a-b (low to high), a step */n or a-b/n (n >= 1), or a comma list"
_MONTH_NAMES = tuple(calendar.month_name)[1:]
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

#: a fire further away than this means the expression (practically) never fires
HORIZON_YEARS = 30


def _fail(message: str) -> SpecError:
    return SpecError(FIELD, message)


@dataclass(frozen=True)
class Cron:
    """A checked cron expression; build it with :meth:`Cron.parse`."""

    expr: str  # as written (trimmed)
    fields: str  # the five fields cronsim evaluates (shorthands spelled out)

    @classmethod
    def parse(cls, expr: str) -> Cron:
        """Check ``expr``; raises SpecError("schedule.cron", message) naming the field."""
        if not isinstance(expr, str) or not expr.strip():
            raise _fail(f"empty; expected {SHAPE}")
        text = expr.strip()
        if text.startswith("@"):
            if text.lower() not in SHORTHANDS:
                raise _fail(f"unknown shorthand '{text}'; allowed: {', '.join(sorted(SHORTHANDS))}")
            text = SHORTHANDS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise _fail(f"expected {SHAPE}, got {len(parts)} in '{text}'")
        try:
            CronSim(" ".join(parts), _EPOCH)
        except CronSimError as exc:
            raise _explain(parts, str(exc)) from None
        return cls(expr=expr.strip(), fields=" ".join(parts))

    def next_fire(self, after_utc: datetime, tz: ZoneInfo) -> datetime:
        """The first fire strictly after ``after_utc`` (aware), as an aware UTC datetime."""
        return next(self._fires(after_utc, tz))

    def next_fires(self, after_utc: datetime, tz: ZoneInfo, n: int) -> list[datetime]:
        """The next ``n`` fires strictly after ``after_utc``."""
        fires = self._fires(after_utc, tz)
        return [next(fires) for _ in range(n)]

    def fires_between(
        self, start_utc: datetime, end_utc: datetime, tz: ZoneInfo, limit: int = 10_000
    ) -> Iterator[datetime]:
        """Fires in (start_utc, end_utc], oldest first, at most ``limit``."""
        for count, fire in enumerate(self._fires(start_utc, tz)):
            if fire > end_utc or count >= limit:
                return
            yield fire

    def _fires(self, after_utc: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        if after_utc.tzinfo is None:
            raise ValueError("after_utc must be timezone-aware")
        start = after_utc.astimezone(tz)
        limit = start.year + HORIZON_YEARS
        for fire in CronSim(self.fields, start):
            if fire.year > limit:
                raise _fail(f"'{self.expr}' does not fire within {HORIZON_YEARS} years")
            yield fire.astimezone(UTC)


def _explain(parts: list[str], message: str) -> SpecError:
    """A message naming the field cronsim refused and what that field allows."""
    for index, (theirs, ours, values) in enumerate(_FIELDS):
        if message.lower() == f"bad {theirs}":
            if theirs == "day-of-month" and _valid_alone(parts):
                return _never(parts)
            return _fail(f"{ours}: '{parts[index]}' is not valid; use {values}, {_FORMS}")
    return _fail(f"'{' '.join(parts)}' is not valid ({message}); expected {SHAPE}")


def _valid_alone(parts: list[str]) -> bool:
    """The fields are each valid, only not together (the month has no such day)."""
    loose = [*parts[:3], "*", parts[4]]
    try:
        CronSim(" ".join(loose), _EPOCH)
    except CronSimError:
        return False
    return True


def _never(parts: list[str]) -> SpecError:
    days = CronSim(f"0 0 {parts[2]} * *", _EPOCH).days
    months = CronSim(f"0 0 1 {parts[3]} *", _EPOCH).months
    first = min(d for d in days if d > 0)  # cronsim writes L as a negative day
    names = ", ".join(_MONTH_NAMES[m - 1] for m in sorted(months))
    return _fail(f"day of month {first} never occurs in {names}; it would never fire")


def zone(name: str, field: str = "schedule.tz") -> ZoneInfo:
    """The time zone ``name`` (IANA, e.g. "Europe/Berlin"); SpecError naming ``field``."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise SpecError(
            field, f"'{name}' is not a known time zone (use an IANA name like Europe/Berlin)"
        ) from exc
