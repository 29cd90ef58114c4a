"""Job definitions: defaults, readable refusals naming the field, schedules, retries and
the catch-up policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from werkhub.jobs.spec import (
    MAX_CATCHUP,
    JobSpec,
    Retries,
    Schedule,
    SpecError,
    backoff_seconds,
    catchup_fires,
    parse_spec,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_defaults() -> None:
    spec = parse_spec({"name": " Morning report ", "notebook": "reports/daily.ipynb"})
    assert spec.name == "Morning report"
    assert spec.schedule.kind == "now" and spec.schedule.tz == "Europe/Berlin"
    assert spec.report.hide_code is True and spec.title == "Morning report"
    assert spec.retries == Retries(max=0, backoff_s=60, factor=2)
    assert spec.catch_up == "once" and spec.notify_success is False and spec.gpu is None
    assert spec.cell_timeout_s == 600 and spec.deadline_s == 3600
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec  # round trip


def test_full_spec() -> None:
    spec = parse_spec(
        {
            "name": "Fleet",
            "template": "predictive-maintenance",
            "parameters": {"n_units": 30, "noise": 0.5, "tags": ["a"]},
            "schedule": {"kind": "cron", "cron": "0 6 * * 1-5", "tz": "Europe/Vienna"},
            "image": "werkhub/pytorch:latest",
            "gpu": {"type": "A100-80GB:3g.40gb", "count": 1, "minutes": 30},
            "cell_timeout_s": 60,
            "deadline_s": 600,
            "retries": {"max": 2, "backoff_s": 30, "factor": 3},
            "report": {"title": "Pumps", "hide_code": False},
            "notify_success": True,
            "catch_up": "all",
        }
    )
    assert spec.title == "Pumps" and spec.gpu is not None and spec.gpu.minutes == 30
    runs = spec.schedule.next_runs(utc(2026, 3, 27, 12), 2)
    assert runs == [utc(2026, 3, 30, 4), utc(2026, 3, 31, 4)]


def test_once_schedule_naive_time_is_local() -> None:
    schedule = Schedule(kind="once", at=datetime(2026, 7, 1, 8, 0))
    assert schedule.at == utc(2026, 7, 1, 6)
    assert schedule.next_runs(utc(2026, 6, 1)) == [utc(2026, 7, 1, 6)]
    assert schedule.next_runs(utc(2026, 7, 2)) == []
    assert Schedule(kind="now").next_runs(utc(2026, 1, 1)) == []


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"notebook": "a.ipynb"}, "name", "required"),
    ({"name": "x"}, "notebook", "give exactly one of 'notebook' or 'template'"),
    ({"name": "x", "notebook": "a.ipynb", "template": "t"}, "notebook", "give exactly one"),
    ({"name": "x", "notebook": "/etc/a.ipynb"}, "notebook", "'/etc/a.ipynb' is absolute"),
    ({"name": "x", "notebook": "../b/a.ipynb"}, "notebook", "'../b/a.ipynb' leaves your home"),
    ({"name": "x", "notebook": "a.py"}, "notebook", "'a.py' is not a notebook"),
    ({"name": "x", "template": "Bad Slug"}, "template", "'Bad Slug' is not a template slug"),
    ({"name": "\x01", "notebook": "a.ipynb"}, "name", "must be non-empty text"),
    ({"name": "x", "notebook": "a.ipynb", "colour": 1}, "colour", "unknown field"),
    (
        {"name": "x", "notebook": "a.ipynb", "schedule": {"kind": "cron", "cron": "61 * * * *"}},
        "schedule.cron",
        "minute: '61' is not valid; use 0-59",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "schedule": {"kind": "cron"}},
        "schedule.cron",
        "required when kind is 'cron'",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "schedule": {"kind": "once"}},
        "schedule.at",
        "required when kind is 'once'",
    ),
    (
        {
            "name": "x",
            "notebook": "a.ipynb",
            "schedule": {"kind": "cron", "cron": "@daily", "tz": "Mars/Base"},
        },
        "schedule.tz",
        "'Mars/Base' is not a known time zone",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "schedule": {"kind": "weekly"}},
        "schedule.kind",
        "Input should be 'cron', 'once' or 'now' (got 'weekly')",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "cell_timeout_s": 100, "deadline_s": 50},
        "cell_timeout_s",
        "100 s is longer than the whole-run deadline_s (50 s)",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "retries": {"max": 11}},
        "retries.max",
        "less than or equal to 10",
    ),
    ({"name": "x", "notebook": "a.ipynb", "gpu": {"count": 1}}, "gpu.type", "required"),
    (
        {"name": "x", "notebook": "a.ipynb", "parameters": {"a-b": 1}},
        "parameters",
        "'a-b' is not a Python variable name",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "parameters": {"a": float("nan")}},
        "parameters",
        "values must be JSON",
    ),
    (
        {"name": "x", "notebook": "a.ipynb", "catch_up": "never"},
        "catch_up",
        "Input should be 'once', 'all' or 'skip'",
    ),
]


@pytest.mark.parametrize(("data", "field", "message"), BAD)
def test_refusals_name_the_field(data: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.field == field
    assert message in info.value.message


def test_backoff() -> None:
    retries = Retries(max=3, backoff_s=30, factor=2)
    assert [backoff_seconds(retries, a) for a in (1, 2, 3)] == [30, 60, 120]
    assert backoff_seconds(Retries(backoff_s=3600, factor=10), 5) == 24 * 3600
    with pytest.raises(ValueError):
        backoff_seconds(retries, 0)


def test_catch_up_policies() -> None:
    last = utc(2026, 3, 26, 5)  # Thu 06:00 Berlin, the last run before werkhub went down
    now = utc(2026, 3, 31, 8)  # back on Tue 10:00 (CEST)
    cron = "0 6 * * 1-5"
    missed = [utc(2026, 3, 27, 5), utc(2026, 3, 30, 4), utc(2026, 3, 31, 4)]
    assert catchup_fires(cron, "Europe/Berlin", last, now, "all") == missed
    assert catchup_fires(cron, "Europe/Berlin", last, now, "once") == missed[-1:]
    assert catchup_fires(cron, "Europe/Berlin", last, now, "skip") == []
    assert catchup_fires(cron, "Europe/Berlin", None, now, "once") == []
    assert catchup_fires(cron, "Europe/Berlin", now, now + timedelta(minutes=1), "once") == []


def test_catch_up_after_long_outage_is_bounded_and_quick() -> None:
    last, now = utc(2025, 1, 1), utc(2026, 1, 1)
    fires = catchup_fires("* * * * *", "Europe/Berlin", last, now, "all")
    assert len(fires) == MAX_CATCHUP and fires[-1] == now and fires == sorted(fires)
    assert catchup_fires("* * * * *", "Europe/Berlin", last, now, "once") == [now]
    yearly = catchup_fires("0 0 1 1 *", "UTC", utc(2020, 6, 1), now, "all")
    assert yearly == [utc(y, 1, 1) for y in range(2021, 2027)]
