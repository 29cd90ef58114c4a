"""Organisation admins set booking policies for their members and groups on a real hub:
within the organisation's budget and the site's GPUs (clear 422s), used at once by the
booking rules (the member's own, then their groups', then the configured policy), and
another organisation's people and groups answer 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import reset_postgres
from tests.support.hub import Werkhub
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError, Unit
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import LayeredPolicies, Policy, PolicySet
from werkhub.db import make_engines, upgrade
from werkhub.errors import NotFound
from werkhub.orgs.policies import OrgPolicies
from werkhub.orgs.store import OrgStore

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
ACME, BETA = "opacme", "opbeta"
PEOPLE = ("op-ann", "op-al", "op-amy", "op-bob", "op-bea")
#: bookings start on the day after tomorrow at a full hour (all inside one rolling week)
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat()


@pytest.fixture(scope="module")
def people(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in PEOPLE}
    with werkhub.admin() as admin:
        for slug in (ACME, BETA):
            reply = admin.post(f"{API}/orgs", json={"slug": slug, "name": slug.upper()})
            assert reply.status_code == 201, reply.text
        reply = admin.patch(f"{API}/orgs/{ACME}", json={"budget_gpu_hours": 30})
        assert reply.status_code == 200, reply.text
        for slug, user, is_admin in (
            (ACME, "op-ann", True),
            (ACME, "op-al", False),
            (ACME, "op-amy", False),
            (BETA, "op-bob", True),
            (BETA, "op-bea", False),
        ):
            reply = admin.put(f"{API}/orgs/{slug}/members/{user}", json={"admin": is_admin})
            assert reply.status_code == 200, reply.text
    with werkhub.client(tokens["op-ann"]) as ann:
        assert ann.post(f"{API}/orgs/{ACME}/groups", json={"name": "lab"}).status_code == 201
        assert ann.put(f"{API}/orgs/{ACME}/groups/lab/members/op-amy").status_code == 204
    with werkhub.client(tokens["op-bob"]) as bob:
        assert bob.post(f"{API}/orgs/{BETA}/groups", json={"name": "lab"}).status_code == 201
    return tokens


def book(client: httpx.Client, start: float, hours: float, count: int = 1) -> httpx.Response:
    body = {"gpu_type": "H100", "count": count, "start": at(start), "end": at(start + hours)}
    return client.post(f"{API}/bookings", json=body)


def release_all(client: httpx.Client, made: list[dict[str, Any]]) -> None:
    for booking in made:
        client.delete(f"{API}/bookings/{booking['id']}")


def test_policies_stay_within_the_budget_and_the_site(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    url = f"{API}/orgs/{ACME}/policies/users/op-al"
    with werkhub.client(people["op-ann"]) as ann:
        over = ann.put(url, json={"gpu_hours_per_week": 31})
        assert over.status_code == 422
        assert "budget of 30 GPU-hours per month" in over.json()["detail"], over.text
        many = ann.put(url, json={"max_concurrent_gpus": 6})
        assert many.status_code == 422 and "5 GPU(s) this site has" in many.json()["detail"]
        few = ann.put(url, json={"max_concurrent_gpus": 2, "allowed_gpu_types": ["L40S"]})
        assert few.status_code == 422 and "of the allowed types" in few.json()["detail"]
        unknown = ann.put(url, json={"allowed_gpu_types": ["B200"]})
        assert unknown.status_code == 422 and "unknown GPU type(s) B200" in unknown.json()["detail"]
        assert ann.put(url, json={"gpu_hours": 3}).status_code == 422  # no such field
        assert ann.put(url, json={"max_booking_hours": -1}).status_code == 422
        # nothing of the refusals was kept
        assert ann.get(url).status_code == 404
        assert ann.get(f"{API}/orgs/{ACME}/policies").json() == []


def test_a_booking_over_the_organisations_policy_is_refused(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    policy = {"gpu_hours_per_week": 4, "max_booking_hours": 2, "max_concurrent_gpus": 1}
    with werkhub.client(people["op-ann"]) as ann:
        reply = ann.put(f"{API}/orgs/{ACME}/policies/users/op-al", json=policy)
        assert reply.status_code == 200, reply.text
        assert reply.json()["policy"]["gpu_hours_per_week"] == 4
        listed = ann.get(f"{API}/orgs/{ACME}/policies").json()
        assert [(p["kind"], p["name"], p["updated_by"]) for p in listed] == [
            ("user", "op-al", "op-ann")
        ]
    made: list[dict[str, Any]] = []
    with werkhub.client(people["op-al"]) as al:
        assert al.get(f"{API}/quota").json()["policy"]["gpu_hours_per_week"] == 4
        long = book(al, 0, 3)
        assert long.status_code == 403, long.text
        assert long.json()["limit"] == "max_booking_hours"
        assert "at most 2 h" in long.json()["detail"]
        two = book(al, 0, 1, count=2)
        assert two.status_code == 403 and two.json()["limit"] == "max_concurrent_gpus"
        for start in (0, 10):
            ok = book(al, start, 2)
            assert ok.status_code == 201, ok.text
            made.append(ok.json())
        over = book(al, 20, 1)
        assert over.status_code == 403 and over.json()["limit"] == "gpu_hours_per_week"
        assert "weekly quota of 4 GPU-hours exceeded" in over.json()["detail"]
        # a member does not set their own policy
        assert al.get(f"{API}/orgs/{ACME}/policies/users/op-al").status_code == 403
        assert al.put(f"{API}/orgs/{ACME}/policies/users/op-al", json={}).status_code == 403
    with werkhub.client(people["op-ann"]) as ann:
        assert ann.delete(f"{API}/orgs/{ACME}/policies/users/op-al").status_code == 204
        assert ann.delete(f"{API}/orgs/{ACME}/policies/users/op-al").status_code == 404
    with werkhub.client(people["op-al"]) as al:
        # the configured policy again (12 h, 40 GPU-hours a week)
        again = book(al, 20, 3)
        assert again.status_code == 201, again.text
        made.append(again.json())
        release_all(al, made)


def test_group_policies_and_the_most_specific_wins(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    group = f"{ACME}-lab"
    with werkhub.client(people["op-ann"]) as ann:
        reply = ann.put(f"{API}/orgs/{ACME}/policies/groups/{group}", json={"max_booking_hours": 1})
        assert reply.status_code == 200, reply.text
        assert (
            ann.get(f"{API}/orgs/{ACME}/policies/groups/{group}").json()["policy"][
                "max_booking_hours"
            ]
            == 1
        )
        # the organisation's members' group is one of its groups too
        assert (
            ann.put(
                f"{API}/orgs/{ACME}/policies/groups/org-{ACME}", json={"max_booking_hours": 5}
            ).status_code
            == 200
        )
    with werkhub.client(people["op-amy"]) as amy:  # in opacme-lab and org-opacme: most generous
        assert book(amy, 30, 6).json()["limit"] == "max_booking_hours"
        made = book(amy, 30, 4)
        assert made.status_code == 201, made.text
        amy.delete(f"{API}/bookings/{made.json()['id']}")
    with werkhub.client(people["op-ann"]) as ann:
        mine = ann.put(f"{API}/orgs/{ACME}/policies/users/op-amy", json={"max_booking_hours": 1})
        assert mine.status_code == 200
    with werkhub.client(people["op-amy"]) as amy:  # her own policy wins over her groups'
        refused = book(amy, 30, 2)
        assert refused.status_code == 403 and "at most 1 h" in refused.json()["detail"]
    with werkhub.client(people["op-ann"]) as ann:
        # leaving the organisation drops her policy (the configured one applies)
        assert ann.delete(f"{API}/orgs/{ACME}/members/op-amy").status_code == 204
        assert ann.get(f"{API}/orgs/{ACME}/policies/users/op-amy").status_code == 404
    with werkhub.client(people["op-amy"]) as amy:
        made = book(amy, 30, 2)
        assert made.status_code == 201, made.text
        amy.delete(f"{API}/bookings/{made.json()['id']}")


def test_another_organisations_policies_answer_404(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    with werkhub.client(people["op-ann"]) as ann:
        assert ann.put(f"{API}/orgs/{ACME}/policies/users/op-al", json={}).status_code == 200
    with werkhub.client(people["op-bob"]) as bob:
        for method, path in (
            ("GET", f"/orgs/{ACME}/policies"),
            ("GET", f"/orgs/{ACME}/policies/users/op-al"),
            ("PUT", f"/orgs/{ACME}/policies/users/op-al"),
            ("DELETE", f"/orgs/{ACME}/policies/users/op-al"),
            ("GET", f"/orgs/{ACME}/policies/groups/{ACME}-lab"),
            ("PUT", f"/orgs/{ACME}/policies/groups/{ACME}-lab"),
            # through his own organisation: not his member, not his group
            ("GET", f"/orgs/{BETA}/policies/users/op-al"),
            ("PUT", f"/orgs/{BETA}/policies/users/op-al"),
            ("PUT", f"/orgs/{BETA}/policies/groups/{ACME}-lab"),
            ("DELETE", f"/orgs/{BETA}/policies/groups/{ACME}-lab"),
        ):
            body = {"max_booking_hours": 100} if method == "PUT" else None
            reply = bob.request(method, f"{API}{path}", json=body)
            assert reply.status_code == 404, (method, path, reply.text)
            assert "op-al" not in reply.text or "not a member" in reply.text
        assert (
            bob.put(
                f"{API}/orgs/{BETA}/policies/groups/{BETA}-lab", json={"max_booking_hours": 3}
            ).status_code
            == 200
        )
    with werkhub.client(people["op-ann"]) as ann:  # unchanged by bob's tries
        kept = ann.get(f"{API}/orgs/{ACME}/policies/users/op-al").json()["policy"]
        assert kept["max_booking_hours"] is None
        ann.delete(f"{API}/orgs/{ACME}/policies/users/op-al")
    with werkhub.admin() as admin:  # platform admins see every organisation's
        listed = admin.get(f"{API}/orgs/{BETA}/policies")
        assert [p["name"] for p in listed.json()] == [f"{BETA}-lab"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'werkhub.sqlite'}"
    url = request.getfixturevalue("postgres_server")
    reset_postgres(url)
    return url


def test_the_ledger_uses_stored_policies_on_sqlite_and_postgresql(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store behind the API (migration 0012) on both databases: what it holds is what
    the booking rules check, and a member who leaves takes no policy along."""
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    monkeypatch.setattr(ledger, "utcnow", lambda: now)
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    layered = LayeredPolicies(PolicySet(default=Policy(max_booking_hours=12)))
    units = tuple(Unit(id=f"n/{i}", node="n", gpu_type="H100", index=i) for i in range(2))
    manager = BookingManager(writer, reader, Settings(units, layered, ZoneInfo("Europe/Berlin")))
    orgs, stored = OrgStore(writer, reader), OrgPolicies(writer, reader, layered)
    try:
        orgs.create("acme", "ACME", ["org-acme"])
        orgs.put_member("acme", "al", admin=False)
        stored.put("acme", "user", "al", Policy(max_booking_hours=1), "ann")
        stored.put("acme", "group", "acme-lab", Policy(max_booking_hours=3), "ann")
        assert stored.get("acme", "user", "al") == Policy(max_booking_hours=1)
        al = Caller("al", groups=("acme-lab",))

        def book(hours: float) -> None:
            start = now + timedelta(hours=1)
            manager.create(al, "al", al.groups, "H100", 1, start, None, timedelta(hours=hours))

        with pytest.raises(LedgerError, match="at most 1 h"):
            book(2)
        book(1)
        orgs.drop_member("acme", "al")
        stored.refresh()
        with pytest.raises(LedgerError, match="at most 3 h"):  # her group's, still there
            book(4)
        stored.drop("acme", "group", "acme-lab")
        book(4)  # the configured policy: 12 h
        assert stored.listing("acme") == []
        with pytest.raises(NotFound):
            stored.get("acme", "user", "al")
    finally:
        writer.dispose()
        reader.dispose()


def test_the_command_line_sets_lists_and_drops_policies(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    where = ("--state", str(werkhub.state), "--config", str(werkhub.config))
    done = werkhub.cli(
        "orgs", "set-policy", ACME, "group", f"{ACME}-lab", "--max-booking-hours", "2",
        "--gpu-types", "H100,L40S", *where,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = werkhub.cli("orgs", "policies", ACME, *where)
    assert listed.returncode == 0, listed.stderr
    assert f"group\t{ACME}-lab\t" in listed.stdout and '"max_booking_hours": 2.0' in listed.stdout
    over = werkhub.cli(
        "orgs", "set-policy", ACME, "user", "op-al", "--gpu-hours-per-week", "99", *where
    )
    assert over.returncode == 1 and "budget of 30 GPU-hours" in over.stderr
    dropped = werkhub.cli("orgs", "drop-policy", ACME, "group", f"{ACME}-lab", *where)
    assert dropped.returncode == 0, dropped.stderr
    assert f"{ACME}-lab" not in werkhub.cli("orgs", "policies", ACME, *where).stdout
