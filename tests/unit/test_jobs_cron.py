"""Cron schedules (cronsim underneath): fields, names, ranges, steps, shorthands, readable
errors, and the fire times across the daylight-saving changes in Europe/Berlin of 2026
(29 March, 25 October), 2027 (28 March, 31 October) and 2028 (26 March, 29 October)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from werkhub.jobs.cron import Cron, zone
from werkhub.jobs.errors import SpecError

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(fires: list[datetime]) -> list[str]:
    return [f.astimezone(BERLIN).strftime("%a %d.%m %H:%M %z") for f in fires]


def test_weekdays_at_six_across_spring_forward() -> None:
    fires = Cron.parse("0 6 * * 1-5").next_fires(utc(2026, 3, 25, 12), BERLIN, 5)
    assert local(fires) == [
        "Thu 26.03 06:00 +0100",
        "Fri 27.03 06:00 +0100",
        "Mon 30.03 06:00 +0200",
        "Tue 31.03 06:00 +0200",
        "Wed 01.04 06:00 +0200",
    ]
    assert fires[1] == utc(2026, 3, 27, 5) and fires[2] == utc(2026, 3, 30, 4)
    assert all(f.tzinfo is UTC for f in fires)


def test_weekdays_at_six_across_fall_back() -> None:
    fires = Cron.parse("0 6 * * mon-fri").next_fires(utc(2026, 10, 22, 12), BERLIN, 4)
    assert local(fires) == [
        "Fri 23.10 06:00 +0200",
        "Mon 26.10 06:00 +0100",
        "Tue 27.10 06:00 +0100",
        "Wed 28.10 06:00 +0100",
    ]
    assert fires[0] == utc(2026, 10, 23, 4) and fires[1] == utc(2026, 10, 26, 5)


def test_skipped_time_fires_once_at_end_of_gap() -> None:
    fires = Cron.parse("30 2 * * *").next_fires(utc(2026, 3, 27, 12), BERLIN, 3)
    assert local(fires) == [
        "Sat 28.03 02:30 +0100",
        "Sun 29.03 03:00 +0200",
        "Mon 30.03 02:30 +0200",
    ]
    assert fires[1] == utc(2026, 3, 29, 1)
    # fixed minutes of a fixed hour: all of them collapse into that one fire
    both = Cron.parse("0,30 2 * * *").next_fires(utc(2026, 3, 29, 0), BERLIN, 2)
    assert local(both) == ["Sun 29.03 03:00 +0200", "Mon 30.03 02:00 +0200"]


def test_stepped_minutes_follow_real_time_in_the_gap() -> None:
    # cronsim (Debian cron): a minute field starting with '*' is not a fixed time, so the
    # skipped quarter hours of 02:xx are not moved; the werkhub rule before cronsim fired
    # them once at 03:00
    quarter = Cron.parse("*/15 2 * * *").next_fires(utc(2026, 3, 29, 0), BERLIN, 2)
    assert local(quarter) == ["Mon 30.03 02:00 +0200", "Mon 30.03 02:15 +0200"]


def test_repeated_time_fires_once_at_first_occurrence() -> None:
    fires = Cron.parse("30 2 * * *").next_fires(utc(2026, 10, 24, 12), BERLIN, 2)
    assert local(fires) == ["Sun 25.10 02:30 +0200", "Mon 26.10 02:30 +0100"]
    assert fires[0] == utc(2026, 10, 25, 0, 30)


def test_hourly_follows_real_time_across_fall_back() -> None:
    fires = Cron.parse("@hourly").next_fires(utc(2026, 10, 24, 22, 30), BERLIN, 5)
    assert fires == [utc(2026, 10, 24, 23), *(utc(2026, 10, 25, h) for h in range(4))]
    assert local(fires)[1:4] == [
        "Sun 25.10 02:00 +0200",
        "Sun 25.10 02:00 +0100",
        "Sun 25.10 03:00 +0100",
    ]


def test_hourly_across_spring_forward_has_no_gap_fire() -> None:
    fires = Cron.parse("30 * * * *").next_fires(utc(2026, 3, 28, 23, 45), BERLIN, 3)
    assert fires == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30)]
    diffs = {b - a for a, b in itertools.pairwise(fires)}
    assert diffs == {timedelta(hours=1)}


def test_fields_ranges_steps_lists_names() -> None:
    cron = Cron.parse("5,35 8-18/5 * jan,jul-aug sun")
    fires = cron.next_fires(utc(2026, 1, 1), BERLIN, 7)
    assert local(fires) == [
        "Sun 04.01 08:05 +0100",
        "Sun 04.01 08:35 +0100",
        "Sun 04.01 13:05 +0100",
        "Sun 04.01 13:35 +0100",
        "Sun 04.01 18:05 +0100",
        "Sun 04.01 18:35 +0100",
        "Sun 11.01 08:05 +0100",
    ]
    # 7 is Sunday too; a step from a start value
    assert local([Cron.parse("0 0 * * 7").next_fire(utc(2026, 1, 1), BERLIN)]) == [
        "Sun 04.01 00:00 +0100"
    ]
    steps = Cron.parse("10/20 * * * *").next_fires(utc(2026, 1, 1), BERLIN, 3)
    assert [f.minute for f in steps] == [10, 30, 50]
    # cronsim's extensions: the last day of the month, the second Monday
    assert local([Cron.parse("0 9 L * *").next_fire(utc(2026, 2, 1), BERLIN)]) == [
        "Sat 28.02 09:00 +0100"
    ]
    assert local([Cron.parse("0 9 * * 1#2").next_fire(utc(2026, 2, 1), BERLIN)]) == [
        "Mon 09.02 09:00 +0100"
    ]


def test_both_transitions_of_2027() -> None:
    daily = Cron.parse("30 2 * * *")
    spring = daily.next_fires(utc(2027, 3, 27, 12), BERLIN, 2)
    assert local(spring) == ["Sun 28.03 03:00 +0200", "Mon 29.03 02:30 +0200"]
    autumn = daily.next_fires(utc(2027, 10, 30, 12), BERLIN, 2)
    assert local(autumn) == ["Sun 31.10 02:30 +0200", "Mon 01.11 02:30 +0100"]
    assert autumn[0] == utc(2027, 10, 31, 0, 30)
    hourly = Cron.parse("0 * * * *").next_fires(utc(2027, 10, 30, 23, 30), BERLIN, 4)
    assert hourly == [utc(2027, 10, 31, h) for h in range(4)]
    assert local(hourly) == [
        "Sun 31.10 02:00 +0200",
        "Sun 31.10 02:00 +0100",
        "Sun 31.10 03:00 +0100",
        "Sun 31.10 04:00 +0100",
    ]
    gap = Cron.parse("0 * * * *").next_fires(utc(2027, 3, 28, 0, 30), BERLIN, 2)
    assert local(gap) == ["Sun 28.03 03:00 +0200", "Sun 28.03 04:00 +0200"]


def test_repeated_hour_of_a_stepped_minute_fires_twice_in_2027() -> None:
    # a minute field starting with '*' follows real time in the repeated hour (cronsim)
    fires = Cron.parse("*/30 2 * * *").next_fires(utc(2027, 10, 30, 23), BERLIN, 5)
    assert fires[:4] == [
        utc(2027, 10, 31, 0),
        utc(2027, 10, 31, 0, 30),
        utc(2027, 10, 31, 1),
        utc(2027, 10, 31, 1, 30),
    ]
    assert local(fires)[4] == "Mon 01.11 02:00 +0100"


def test_both_transitions_of_2028() -> None:
    weekdays = Cron.parse("0 6 * * 1-5")
    spring = weekdays.next_fires(utc(2028, 3, 23, 12), BERLIN, 3)
    assert local(spring) == [
        "Fri 24.03 06:00 +0100",
        "Mon 27.03 06:00 +0200",
        "Tue 28.03 06:00 +0200",
    ]
    daily = Cron.parse("30 2 * * *")
    assert local(daily.next_fires(utc(2028, 3, 25, 12), BERLIN, 2)) == [
        "Sun 26.03 03:00 +0200",
        "Mon 27.03 02:30 +0200",
    ]
    assert local(daily.next_fires(utc(2028, 10, 28, 12), BERLIN, 2)) == [
        "Sun 29.10 02:30 +0200",
        "Mon 30.10 02:30 +0100",
    ]


def test_shorthands() -> None:
    after = utc(2026, 5, 13, 10)  # a Wednesday
    assert local([Cron.parse("@daily").next_fire(after, BERLIN)]) == ["Thu 14.05 00:00 +0200"]
    assert local([Cron.parse("@weekly").next_fire(after, BERLIN)]) == ["Sun 17.05 00:00 +0200"]
    assert local([Cron.parse("@monthly").next_fire(after, BERLIN)]) == ["Mon 01.06 00:00 +0200"]
    assert local([Cron.parse("@yearly").next_fire(after, BERLIN)]) == ["Fri 01.01 00:00 +0100"]


def test_day_fields_or_when_both_restricted() -> None:
    # the 1st of the month OR a Friday (Vixie cron)
    fires = Cron.parse("0 12 1 * fri").next_fires(utc(2026, 5, 28), BERLIN, 3)
    assert local(fires) == [
        "Fri 29.05 12:00 +0200",
        "Mon 01.06 12:00 +0200",
        "Fri 05.06 12:00 +0200",
    ]
    # a restricted day of month with '*' day of week: only that day
    assert local([Cron.parse("0 12 1 * *").next_fire(utc(2026, 5, 28), BERLIN)]) == [
        "Mon 01.06 12:00 +0200"
    ]


def test_leap_day_and_strictly_after() -> None:
    assert Cron.parse("0 0 29 2 *").next_fire(utc(2026, 1, 1), BERLIN) == utc(2028, 2, 28, 23)
    at = utc(2026, 5, 1, 4)  # 06:00 Berlin exactly
    assert Cron.parse("0 6 * * *").next_fire(at, BERLIN) == utc(2026, 5, 2, 4)
    with pytest.raises(ValueError, match="aware"):
        Cron.parse("0 6 * * *").next_fire(datetime(2026, 5, 1), BERLIN)
    # the 30th of February is refused up front, the 29th waits for a leap year
    assert Cron.parse("0 0 29 2 *").next_fire(utc(2028, 3, 1), BERLIN) == utc(2032, 2, 28, 23)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "minute: '61' is not valid; use 0-59, *, a range a-b"),
        ("* * *", "expected 5 fields 'minute hour day-of-month month day-of-week', got 3"),
        ("0 0 * * * *", "expected 5 fields 'minute hour day-of-month month day-of-week', got 6"),
        ("a b c d e", "minute: 'a' is not valid; use 0-59"),
        ("*/0 * * * *", "minute: '*/0' is not valid; use 0-59"),
        ("0 24 * * *", "hour: '24' is not valid; use 0-23"),
        ("0 0 0 * *", "day of month: '0' is not valid; use 1-31 or L"),
        ("0 0 * 13 *", "month: '13' is not valid; use 1-12 or jan-dec"),
        ("0 0 * foo *", "month: 'foo' is not valid; use 1-12 or jan-dec"),
        ("0 0 * * 8", "day of week: '8' is not valid; use 0-7 or sun-sat"),
        ("0 5-2 * * *", "hour: '5-2' is not valid; use 0-23, *, a range a-b (low to high)"),
        ("0 0 30 2 *", "day of month 30 never occurs in February; it would never fire"),
        ("0 0 31 4,jun *", "day of month 31 never occurs in April, June; it would never fire"),
        ("1,,2 * * * *", "minute: '1,,2' is not valid"),
        ("@fortnightly", "unknown shorthand '@fortnightly'"),
        ("", "empty"),
    ],
)
def test_invalid_expressions_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        Cron.parse(expr)
    assert info.value.field == "schedule.cron"
    assert info.value.message.startswith(message)
    assert str(info.value).startswith("schedule.cron: ")


def test_zone_names() -> None:
    assert zone("Europe/Berlin") == BERLIN
    with pytest.raises(SpecError, match="'Mars/Olympus' is not a known time zone"):
        zone("Mars/Olympus")
    with pytest.raises(SpecError, match=r"schedule\.tz"):
        zone("../../etc/passwd")


def test_every_minute_is_fast() -> None:
    cron = Cron.parse("* * * * *")
    fires = list(cron.fires_between(utc(2026, 3, 29, 0), utc(2026, 3, 29, 3), BERLIN))
    assert len(fires) == 180 and fires[0] == utc(2026, 3, 29, 0, 1)
    assert len(set(fires)) == 180
