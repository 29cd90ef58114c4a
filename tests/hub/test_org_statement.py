"""An organisation's monthly statement on a real hub: its members' GPU-hours booked, used
and released, per member and per GPU type, booked split into guaranteed and borrowed, equal
to the ledger's own sums to the minute; prices give the amount; CSV and the printable page;
who may see it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.hub import Werkhub, running_werkhub

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
SLUG = "stacme"
NODES = [
    {"name": "m1", "devices": [{"index": i, "model": "H100", "memory_gb": 80} for i in range(4)]},
    {"name": "m2", "devices": [{"index": i, "model": "L40S", "memory_gb": 48} for i in range(2)]},
]
PRICES = {"H100": 2.8, "L40S": 0.95}
ZONE = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "gpus": {"nodes": NODES, "simulated": True},
        "services": {"mlflow": {"enabled": False}},
        "orgs": {"prices_per_gpu_hour": PRICES},
    }
    with running_werkhub(tmp_path_factory.mktemp("statement"), extra) as werkhub:
        yield werkhub


@pytest.fixture(scope="module")
def people(hub: Werkhub) -> dict[str, str]:
    tokens = {n: hub.create_user(n) for n in ("sa-ann", "sa-al", "sa-out")}
    with hub.admin() as admin:
        assert admin.post(f"{API}/orgs", json={"slug": SLUG, "name": "ACME"}).status_code == 201
        for user, is_admin in (("sa-ann", True), ("sa-al", False)):
            reply = admin.put(f"{API}/orgs/{SLUG}/members/{user}", json={"admin": is_admin})
            assert reply.status_code == 200, reply.text
    return tokens


def book(hub: Werkhub, token: str, gpu_type: str, count: int, start: str, hours: int) -> dict:
    with hub.client(token) as api:
        reply = api.post(
            f"{API}/bookings",
            json={
                "gpu_type": gpu_type,
                "count": count,
                "start": start,
                "duration_minutes": hours * 60,
            },
        )
        assert reply.status_code == 201, reply.text
        return reply.json()


def test_statement_equals_the_ledgers_sums(hub: Werkhub, people: dict[str, str]) -> None:
    now = datetime.now(UTC)
    later = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    month = now.astimezone(ZONE).strftime("%Y-%m")
    if later.astimezone(ZONE).strftime("%Y-%m") != month:
        later = now + timedelta(minutes=2)  # the last day of a month: stay inside it
    with hub.admin() as admin:  # two H100 guaranteed, no L40S: al's L40S is borrowed
        url = f"{API}/orgs/{SLUG}/guarantees"
        assert admin.put(url, json={"H100": 2}).status_code == 200
    first = book(hub, people["sa-ann"], "H100", 2, "now", 2)
    beyond = book(hub, people["sa-al"], "H100", 1, "now", 1)
    assert not first["borrowed"] and beyond["borrowed"]
    assert book(hub, people["sa-al"], "L40S", 1, later.isoformat(), 3)["borrowed"]
    book(hub, people["sa-out"], "H100", 1, "now", 1)  # outside the organisation
    with hub.client(people["sa-ann"]) as ann:
        assert ann.post(f"{API}/bookings/{first['id']}/release").status_code == 200
        statement = ann.get(f"{API}/orgs/{SLUG}/statement", params={"month": month})
    assert statement.status_code == 200, statement.text
    s = statement.json()
    assert set(s["members"]) == {"sa-ann", "sa-al"}
    # the ledger's own sums for the same month, per user
    start = datetime.fromisoformat(s["start"])
    end = datetime.fromisoformat(s["end"])
    with hub.admin() as admin:
        usage = admin.get(
            f"{API}/usage", params={"start": start.isoformat(), "end": end.isoformat()}
        ).json()["users"]
        mine = admin.get(f"{API}/bookings", params={"limit": 200}).json()
    for member, figures in s["members"].items():
        for field in ("booked", "released"):
            assert abs(figures[field] - usage[member][field]) < 1 / 60, (member, field)
        # used grows while a booking runs: compared within a minute
        assert abs(figures["used"] - usage[member]["used"]) < 1 / 60 + 0.02

    # per GPU type, from the bookings themselves (clipped to the month: a run near its end)
    def hours_in_month(b: dict[str, Any]) -> float:
        lo = max(datetime.fromisoformat(b["start"]), start)
        hi = min(datetime.fromisoformat(b["booked_end"]), end)
        return b["count"] * max(0.0, (hi - lo) / timedelta(hours=1))

    counted = [b for b in mine if b["user"] in s["members"] and b["state"] != "cancelled"]
    for gpu_type, figures in s["gpu_types"].items():
        booked = sum(hours_in_month(b) for b in counted if b["gpu_type"] == gpu_type)
        assert abs(figures["booked"] - booked) < 1 / 60, gpu_type
        borrowed = sum(
            hours_in_month(b) for b in counted if b["gpu_type"] == gpu_type and b["borrowed"]
        )
        assert abs(figures["borrowed"] - borrowed) < 1 / 60, gpu_type
        assert abs(figures["guaranteed"] - (booked - borrowed)) < 1 / 60, gpu_type
        assert figures["amount"] == pytest.approx(round(figures["booked"] * PRICES[gpu_type], 2))
    # the same split per member, and it adds up to the booked hours everywhere
    for member, figures in s["members"].items():
        borrowed = sum(hours_in_month(b) for b in counted if b["user"] == member and b["borrowed"])
        assert abs(figures["borrowed"] - borrowed) < 1 / 60, member
    for figures in [*s["members"].values(), *s["gpu_types"].values(), s["totals"]]:
        assert abs(figures["guaranteed"] + figures["borrowed"] - figures["booked"]) < 1 / 60
    assert s["members"]["sa-ann"]["guaranteed"] > 0 and s["members"]["sa-ann"]["borrowed"] == 0
    assert s["members"]["sa-al"]["guaranteed"] == 0 and s["members"]["sa-al"]["borrowed"] > 0
    assert s["gpu_types"]["H100"]["guaranteed"] > 0 and s["gpu_types"]["H100"]["borrowed"] > 0
    assert s["members"]["sa-ann"]["released"] > 0
    assert s["amount"] == pytest.approx(sum(f["amount"] for f in s["gpu_types"].values()))
    assert "sa-out" not in s["members"]


def test_csv_page_and_who_may_see_it(hub: Werkhub, people: dict[str, str]) -> None:
    with hub.client(people["sa-ann"]) as ann:
        reply = ann.get(f"{API}/orgs/{SLUG}/statement", params={"format": "csv"})
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(reply.text)))
        assert rows[0][:2] == ["section", "name"] and rows[-1][0] == "total"
        split = rows[0].index("guaranteed_gpu_hours"), rows[0].index("borrowed_gpu_hours")
        for row in rows[1:]:  # guaranteed + borrowed = booked, in every row
            parts = float(row[split[0]]) + float(row[split[1]])
            assert abs(parts - float(row[rows[0].index("booked_gpu_hours")])) < 1e-3, row
        assert {r[1] for r in rows if r[0] == "member"} == {"sa-ann", "sa-al"}
        page = ann.get(f"/services/werkhub/orgs/{SLUG}/statement")
        assert page.status_code == 200 and 'data-testid="statement-members"' in page.text
        assert "Borrowed GPU-h" in page.text and 'data-testid="statement-split-chart"' in page.text
        assert "<svg" in page.text and "http" not in page.text.split("<main", 1)[-1].replace(
            "http://www.w3.org/2000/svg", ""
        )
        bad = ann.get(f"{API}/orgs/{SLUG}/statement", params={"month": "2026-13"})
        assert bad.status_code == 422
    with hub.client(people["sa-al"]) as al:  # a member, not an admin
        assert al.get(f"{API}/orgs/{SLUG}/statement").status_code == 403
    with hub.client(people["sa-out"]) as out:
        assert out.get(f"{API}/orgs/{SLUG}/statement").status_code == 404
    with hub.admin() as admin:  # platform admins see every organisation's
        assert admin.get(f"{API}/orgs/{SLUG}/statement").status_code == 200


def test_guarantees_through_the_api(hub: Werkhub, people: dict[str, str]) -> None:
    with hub.admin() as admin:
        url = f"{API}/orgs/{SLUG}/guarantees"
        reply = admin.put(url, json={"H100": 4, "L40S": 1})
        assert reply.status_code == 200 and reply.json() == {"H100": 4, "L40S": 1}
        assert admin.put(url, json={"H100": 5}).status_code == 409  # more than the site has
        assert admin.put(url, json={"B200": 1}).status_code == 422  # no such type
        assert admin.put(url, json={"H100": -1}).status_code == 422
        assert admin.get(url).json() == {"H100": 4, "L40S": 1}  # refusals changed nothing
    with hub.client(people["sa-ann"]) as ann:  # an organisation admin sees, does not set
        assert ann.get(f"{API}/orgs/{SLUG}/guarantees").status_code == 200
        assert ann.put(f"{API}/orgs/{SLUG}/guarantees", json={"H100": 1}).status_code == 403
