"""Policies and GPU-hour quotas, including weeks across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from werkhub.booking.ledger import LedgerError, Slot, State
from werkhub.booking.quota import Policy, PolicySet, check_policy, remaining_quota, week_windows

BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)
NOW = datetime(2026, 10, 20, 8, 0, tzinfo=UTC)


def booking(
    i: int,
    start: datetime,
    hours: float,
    count: int = 1,
    user: str = "u",
    state: State = State.BOOKED,
) -> Slot:
    return Slot(
        id=i,
        user=user,
        gpu_type="H100",
        count=count,
        start=start,
        end=start + timedelta(hours=hours),
        devices=(),
        state=state,
    )


def check(
    policy: Policy,
    start: datetime,
    hours: float,
    slots: list[Slot],
    count: int = 1,
    gpu_type: str = "H100",
) -> None:
    check_policy(
        policy, BERLIN, "u", gpu_type, count, start, start + timedelta(hours=hours), NOW, slots
    )


def test_group_policies_merge_generously_and_user_override_wins() -> None:
    policies = PolicySet(
        default=Policy(gpu_hours_per_week=5),
        groups={
            "students": Policy(
                gpu_hours_per_week=6, max_concurrent_gpus=1, allowed_gpu_types=["L40S"]
            ),
            "engineers": Policy(
                gpu_hours_per_week=40, max_concurrent_gpus=4, allowed_gpu_types=["H100"]
            ),
        },
        users={"lena": Policy(gpu_hours_per_week=200)},
    )
    merged = policies.for_user("max", ["students", "engineers"])
    assert merged.gpu_hours_per_week == 40 and merged.max_concurrent_gpus == 4
    assert merged.allowed_gpu_types == ["H100", "L40S"]
    assert policies.for_user("lena", ["students"]).gpu_hours_per_week == 200
    assert policies.for_user("nobody", []).gpu_hours_per_week == 5
    unlimited = PolicySet(
        groups={"a": Policy(gpu_hours_per_week=None), "b": Policy(gpu_hours_per_week=3)}
    )
    assert unlimited.for_user("x", ["a", "b"]).gpu_hours_per_week is None


def test_limits_name_themselves() -> None:
    with pytest.raises(LedgerError, match="does not allow H100") as info:
        check(Policy(allowed_gpu_types=["L40S"]), NOW, 1, [])
    assert info.value.kind == "policy" and info.value.detail["limit"] == "allowed_gpu_types"
    with pytest.raises(LedgerError, match="at most 4 h"):
        check(Policy(max_booking_hours=4), NOW, 5, [])
    with pytest.raises(LedgerError, match="at most 7 days ahead"):
        check(Policy(max_advance_days=7), NOW + timedelta(days=8), 1, [])
    with pytest.raises(LedgerError, match="at most 2 GPU"):
        check(Policy(max_concurrent_gpus=2), NOW + H, 2, [booking(1, NOW, 2)], count=2)
    check(Policy(max_concurrent_gpus=2), NOW + 2 * H, 2, [booking(1, NOW, 2)], count=2)


def test_rolling_week_counts_any_seven_days() -> None:
    policy = Policy(gpu_hours_per_week=10)
    past = [booking(1, NOW - timedelta(days=6), 4, count=2)]  # 8 GPU-hours six days ago
    with pytest.raises(LedgerError) as info:
        check(policy, NOW, 3, past)
    assert info.value.detail["remaining"] == pytest.approx(2.0)
    check(policy, NOW, 2, past)
    check(policy, NOW + timedelta(days=1), 3, past)  # the old one left the window
    cancelled = [booking(1, NOW - timedelta(days=6), 4, count=2, state=State.CANCELLED)]
    check(policy, NOW, 10, cancelled)  # refunded


def test_calendar_week_across_dst_end() -> None:
    """Europe/Berlin leaves summer time on Sunday 2026-10-25: that week has 169 hours."""
    policy = Policy(gpu_hours_per_week=10, week="calendar")
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    (window,) = week_windows(start, start + H, policy, BERLIN, [])
    assert window[0] == datetime(2026, 10, 18, 22, 0, tzinfo=UTC)  # Mon 00:00 CEST
    assert window[1] == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)  # Mon 00:00 CET
    assert window[1] - window[0] == timedelta(hours=169)
    before = [booking(1, datetime(2026, 10, 19, 6, 0, tzinfo=UTC), 9)]
    with pytest.raises(LedgerError, match=r"1\.00 left"):
        check_policy(policy, BERLIN, "u", "H100", 1, start, start + 2 * H, start, before)
    # the same hours on Monday 00:30 Berlin time fall into the next week
    monday = datetime(2026, 10, 25, 23, 30, tzinfo=UTC)
    check_policy(policy, BERLIN, "u", "H100", 1, monday, monday + 2 * H, start, before)


def test_calendar_booking_spanning_two_weeks_is_split() -> None:
    policy = Policy(gpu_hours_per_week=3, week="calendar")
    sunday_night = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)  # 22:00 Berlin on Sunday
    windows = week_windows(sunday_night, sunday_night + 4 * H, policy, BERLIN, [])
    assert len(windows) == 2
    check_policy(policy, BERLIN, "u", "H100", 1, sunday_night, sunday_night + 4 * H, NOW, [])


def test_remaining_quota_reports_the_fullest_window() -> None:
    policy = Policy(gpu_hours_per_week=10)
    slots = [
        booking(1, NOW - timedelta(days=2), 3),
        booking(2, NOW + timedelta(days=2), 2),
        booking(3, NOW, 50, user="other"),
    ]
    summary = remaining_quota(policy, BERLIN, "u", slots, NOW)
    assert summary["booked_gpu_hours"] == pytest.approx(5.0)
    assert summary["remaining_gpu_hours"] == pytest.approx(5.0)
