"""Pure rules of organisations: slugs and mirrored groups, who sees and manages what,
which shares stay inside, and the statement's sums (clipped to the period)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from werkhub.orgs import rules, statement

H = 3600.0


def test_slugs_and_groups() -> None:
    assert rules.OrgCreate(slug="acme2", name="ACME").slug == "acme2"
    for bad in ("A", "acme-gmbh", "1acme", "a" * 21):
        with pytest.raises(ValidationError):
            rules.OrgCreate(slug=bad, name="x")
    assert rules.members_group("acme") == "org-acme"
    assert rules.admins_group("acme") == "org-acme-admins"
    assert rules.inner_group("acme", "qa") == "acme-qa"
    assert rules.group_slug("org-acme-admins", {"acme"}) == "acme"
    assert rules.group_slug("acme-qa", {"acme"}) == "acme"
    assert rules.group_slug("beta-qa", {"acme"}) is None


def test_who_sees_and_manages() -> None:
    admin = rules.Actor("root", platform_admin=True)
    boss = rules.Actor("ann", org="acme", org_admin=True)
    member = rules.Actor("al", org="acme")
    outsider = rules.Actor("zed")
    assert admin.manages("beta") and boss.manages("acme") and not boss.manages("beta")
    assert member.sees("acme") and not member.manages("acme")
    assert not outsider.sees("acme")


def test_shares_stay_inside() -> None:
    assert rules.share_refusal("acme", "acme-qa", "acme") is None
    assert rules.share_refusal(None, "team", None) is None
    assert "across organisations" in (rules.share_refusal("acme", "org-beta", "beta") or "")
    assert "outside every" in (rules.share_refusal(None, "acme-qa", "acme") or "")
    assert "not a group of your" in (rules.share_refusal("acme", "team", None) or "")


def test_month_bounds() -> None:
    start, end = statement.month_bounds("2026-02", ZoneInfo("Europe/Berlin"))
    assert (start.day, end.month, (end - start).days) == (1, 3, 28)
    with pytest.raises(ValueError, match="YYYY-MM"):
        statement.month_bounds("2026-13", ZoneInfo("UTC"))


def test_statement_sums_clip_to_the_period() -> None:
    bookings = [
        # 2 GPUs from -1 h to +3 h, released at +1 h: 2 x 3 h booked in [0, 10 h), 2 x 2 released
        {"id": 1, "user": "ann", "gpu_type": "H100", "count": 2, "kind": "server",
         "start": -H, "end": H, "booked_end": 3 * H},
        {"id": 2, "user": "al", "gpu_type": "L4", "count": 1, "kind": "endpoint",
         "start": 2 * H, "end": 4 * H, "booked_end": 4 * H, "borrowed": True},
        {"id": 3, "user": "zed", "gpu_type": "H100", "count": 8, "kind": "server",
         "start": 0, "end": H, "booked_end": H},
    ]  # fmt: skip
    segments = [
        {"booking_id": 1, "user": "ann", "count": 2, "start": 0.0, "end": H},
        {"booking_id": 2, "user": "al", "count": 1, "start": 2 * H, "end": None},
    ]
    runs = [{"owner": "al", "status": "succeeded"}, {"owner": "zed", "status": "failed"}]
    s = statement.compute(
        bookings, segments, runs, {"ann", "al"}, 0.0, 10 * H, 3 * H, {"H100": 2.5}
    )
    assert s["members"]["ann"] == {
        "booked": 6.0, "used": 2.0, "released": 4.0, "guaranteed": 6.0, "borrowed": 0.0
    }  # fmt: skip
    assert s["members"]["al"] == {
        "booked": 2.0, "used": 1.0, "released": 0.0, "guaranteed": 0.0, "borrowed": 2.0
    }  # fmt: skip
    assert s["gpu_types"]["H100"]["amount"] == 15.0 and s["gpu_types"]["L4"]["amount"] is None
    assert s["endpoint_hours"] == 2.0 and s["job_runs"] == {"al": 1}
    assert s["totals"] == {
        "booked": 8.0, "used": 3.0, "released": 4.0, "guaranteed": 6.0, "borrowed": 2.0
    }  # fmt: skip
    assert s["amount"] == 15.0
    rows = statement.csv_rows(s)
    assert rows[-1][:7] == ["total", "", "8.0000", "3.0000", "4.0000", "6.0000", "2.0000"]
