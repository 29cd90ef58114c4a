"""Booking API over HTTP against a real werkhub (hub, proxy, service) on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import reset_postgres
from tests.support.hub import Werkhub, make_werkhub

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
NODES = [
    {"name": "n1", "devices": [{"index": i, "model": "H100", "memory_gb": 80} for i in range(4)]},
    {
        "name": "n2",
        "devices": [
            {"index": 0, "model": "L40S", "memory_gb": 48},
            {
                "index": 1,
                "model": "A100-80GB",
                "memory_gb": 80,
                "mig": [{"profile": "3g.40gb", "count": 2}],
            },
        ],
    },
]
POLICIES = {
    "default": {
        "gpu_hours_per_week": 1000,
        "max_booking_hours": 48,
        "max_advance_days": 60,
        "max_concurrent_gpus": 4,
    },
    "groups": {
        "students": {
            "gpu_hours_per_week": 2,
            "max_booking_hours": 2,
            "max_concurrent_gpus": 1,
            "allowed_gpu_types": ["L40S"],
        }
    },
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "gpus": {"nodes": NODES, "simulated": True},
        "booking": {"policies": POLICIES},
        # the benchmark's floor endpoint: on with SQLite, off (its default) with PostgreSQL
        "services": {"mlflow": {"enabled": False}, "werkhub": {"probe": request.param == "sqlite"}},
    }
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_server")
        reset_postgres(url)
        extra["database"] = {"url": url}
    werkhub = make_werkhub(tmp_path_factory.mktemp(f"booking-{request.param}"), extra)
    werkhub.db_url = extra.get("database", {}).get("url")  # type: ignore[attr-defined]
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def tokens(hub: Werkhub) -> dict[str, str]:
    names = ["ann", "ben", "stu"]
    made = {name: hub.create_user(name) for name in names}
    with hub.admin() as api:
        api.post("/hub/api/groups/students")
        api.post("/hub/api/groups/students/users", json={"users": ["stu"]})
    return made


#: tomorrow at this full hour, fixed once: read again at each call, a test that ran across a
#: full hour compared slots an hour apart (its bookings "vanished" from the query)
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat()


def post(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post(f"{API}/bookings", json=body)


def count_rows(hub: Werkhub) -> int:
    url = getattr(hub, "db_url", None)
    if url is None:
        with sqlite3.connect(hub.state / "werkhub.sqlite") as db:
            return db.execute("SELECT count(*) FROM bookings").fetchone()[0]
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM bookings")).scalar_one()
    engine.dispose()
    return found


def test_inventory_marks_simulated_types(hub: Werkhub, tokens: dict[str, str]) -> None:
    with hub.client(tokens["ann"]) as api:
        inventory = api.get(f"{API}/gpus").json()
    types = {t["gpu_type"]: t for t in inventory["types"]}
    assert types["H100"]["units"] == 4 and types["H100"]["simulated"] is True
    assert types["A100-80GB:3g.40gb"]["units"] == 2


def test_book_change_release_cycle(hub: Werkhub, tokens: dict[str, str]) -> None:
    with hub.client(tokens["ann"]) as api:
        made = post(api, gpu_type="A100-80GB:3g.40gb", count=2, start=at(1), end=at(3))
        assert made.status_code == 201, made.text
        booking = made.json()
        assert len(booking["devices"]) == 2 and booking["simulated"] is True
        assert booking["time_zone"] == "Europe/Berlin" and booking["start_local"].endswith(
            ("+01:00", "+02:00")
        )
        longer = api.patch(f"{API}/bookings/{booking['id']}", json={"end": at(4)})
        assert longer.status_code == 200 and longer.json()["devices"] == booking["devices"]
        early = api.post(f"{API}/bookings/{booking['id']}/release")
        assert early.status_code == 409 and "cancel a future one" in early.json()["detail"]
        gone = api.delete(f"{API}/bookings/{booking['id']}")
        assert gone.status_code == 200 and gone.json()["state"] == "cancelled"
        now = post(api, gpu_type="L40S", count=1, start="now", duration_minutes=30)
        assert now.status_code == 201, now.text
        released = api.post(f"{API}/bookings/{now.json()['id']}/release").json()
        assert released["state"] == "released"
        assert [a["action"] for a in released["audit"]] == ["create", "release"]
        quota = api.get(f"{API}/quota").json()
        assert quota["user"] == "ann" and quota["gpu_hours_per_week"] == 1000


def test_conflict_gives_earliest_free_slot(hub: Werkhub, tokens: dict[str, str]) -> None:
    with hub.client(tokens["ann"]) as api:
        assert post(api, gpu_type="H100", count=4, start=at(10), end=at(12)).status_code == 201
    with hub.client(tokens["ben"]) as api:
        clash = post(api, gpu_type="H100", count=2, start=at(11), duration_minutes=60)
        assert clash.status_code == 409
        body = clash.json()
        assert "not free" in body["detail"]
        assert datetime.fromisoformat(body["earliest_free"]["start"]) == datetime.fromisoformat(
            at(12)
        )


def test_policy_breach_names_limit(hub: Werkhub, tokens: dict[str, str]) -> None:
    with hub.client(tokens["stu"]) as api:
        wrong_type = post(api, gpu_type="H100", count=1, start=at(20), duration_minutes=60)
        assert wrong_type.status_code == 403 and wrong_type.json()["limit"] == "allowed_gpu_types"
        assert post(api, gpu_type="L40S", count=1, start=at(20), end=at(22)).status_code == 201
        over = post(api, gpu_type="L40S", count=1, start=at(30), duration_minutes=60)
        assert over.status_code == 403
        body = over.json()
        assert body["limit"] == "gpu_hours_per_week" and body["remaining"] == 0
        assert "weekly quota of 2 GPU-hours" in body["detail"]


def test_other_users_booking_is_404_and_admin_sees_all(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    with hub.client(tokens["ann"]) as api:
        mine = post(api, gpu_type="L40S", count=1, start=at(40), duration_minutes=60).json()
    with hub.client(tokens["ben"]) as api:
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/release")):
            reply = api.request(method, f"{API}/bookings/{mine['id']}{suffix}")
            assert reply.status_code == 404 and reply.json()["detail"] == f"no booking {mine['id']}"
        patch = api.patch(f"{API}/bookings/{mine['id']}", json={"end": at(42)})
        assert patch.status_code == 404
        assert all(b["user"] == "ben" for b in api.get(f"{API}/bookings").json())
        assert (
            api.get(
                f"{API}/usage", params={"start": at(-48), "end": at(48), "user": "ann"}
            ).status_code
            == 403
        )
    with hub.admin() as api:
        listed = api.get(f"{API}/bookings", params={"user": "ann"}).json()
        assert mine["id"] in {b["id"] for b in listed}
        usage = api.get(f"{API}/usage", params={"start": at(-48), "end": at(100)}).json()
        assert usage["users"]["ann"]["booked"] > 0
        assert "students" in usage["groups"]


def test_bad_input_is_refused_and_nothing_stored(hub: Werkhub, tokens: dict[str, str]) -> None:
    before = count_rows(hub)
    cases = [
        ({"gpu_type": "H100", "count": 1, "start": at(5), "end": at(4)}, 422, "end must be after"),
        ({"gpu_type": "H100", "count": 0, "start": at(5), "end": at(6)}, 422, "count"),
        ({"gpu_type": "H100", "count": -2, "start": at(5), "end": at(6)}, 422, "count"),
        ({"gpu_type": "V100", "count": 1, "start": at(5), "end": at(6)}, 422, "unknown GPU type"),
        (
            {"gpu_type": "H100", "count": 1, "start": "9999-01-01T00:00:00Z", "end": at(6)},
            422,
            "start: 9999-01-01T00:00:00+00:00 is out of range",
        ),
        ({"gpu_type": "H100", "count": 1, "start": "2026-13-45T00:00", "end": at(6)}, 422, "start"),
        (
            {"gpu_type": "H100", "count": 1, "start": "2020-01-01T00:00:00", "end": at(6)},
            422,
            "start",
        ),
        ({"gpu_type": "H100", "count": "two", "start": at(5), "end": at(6)}, 422, "count"),
        ({"gpu_type": "H100", "count": 1, "start": at(5)}, 422, "either end or duration"),
        (
            {"gpu_type": "H100", "count": 1, "start": at(5), "end": at(6), "colour": "red"},
            422,
            "colour",
        ),
        (
            {"gpu_type": "H100", "count": 1, "start": at(5), "duration_minutes": 10**9},
            422,
            "duration_minutes",
        ),
        (
            {"gpu_type": "H100", "count": 1, "start": at(5), "end": at(6), "user": "ben"},
            403,
            "only administrators",
        ),
    ]
    with hub.client(tokens["ann"]) as api:
        for body, status, text_ in cases:
            reply = api.post(f"{API}/bookings", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert text_ in reply.json()["detail"], (body, reply.text)
        huge = api.post(
            f"{API}/bookings",
            content=b"{" + b" " * 200_000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413 and "too large" in huge.json()["detail"]
        not_json = api.post(
            f"{API}/bookings", content=b"gpus please", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 422
        assert api.get(f"{API}/bookings/abc").status_code == 422
        assert api.get(f"{API}/availability", params={"gpu_type": "H100"}).status_code == 422
    assert count_rows(hub) == before


def test_idempotency_key(hub: Werkhub, tokens: dict[str, str]) -> None:
    body = {"gpu_type": "L40S", "count": 1, "start": at(50), "duration_minutes": 60}
    with hub.client(tokens["ben"]) as api:
        first = api.post(f"{API}/bookings", json=body, headers={"Idempotency-Key": "abc-1"})
        second = api.post(f"{API}/bookings", json=body, headers={"Idempotency-Key": "abc-1"})
        assert first.status_code == 201 and second.status_code == 200
        assert second.headers["Idempotent-Replayed"] == "true"
        assert first.json()["id"] == second.json()["id"]
        other = api.post(
            f"{API}/bookings", json={**body, "start": at(52)}, headers={"Idempotency-Key": "abc-1"}
        )
        assert other.status_code == 422 and "different request" in other.json()["detail"]


def test_availability_and_openapi(hub: Werkhub, tokens: dict[str, str]) -> None:
    with hub.client(tokens["ann"]) as api:
        steps = api.get(
            f"{API}/availability",
            params={"gpu_type": "H100", "start": at(9), "end": at(13), "step": 60},
        ).json()["steps"]
        assert [s["free"] for s in steps] == [4, 0, 0, 4]
        spec = api.get(f"{API}/openapi.json").json()
    for path in (
        "/gpus",
        "/availability",
        "/bookings",
        "/bookings/{booking_id}",
        "/bookings/{booking_id}/release",
        "/quota",
        "/usage",
        "/waitlist",
    ):
        assert f"{API}{path}" in spec["paths"], path
    post_op = spec["paths"][f"{API}/bookings"]["post"]
    assert {"201", "200", "202", "403", "409", "422"} <= set(post_op["responses"])


def test_probe_is_one_insert_when_enabled_and_404_otherwise(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    """The benchmark's floor (POST /probe) authenticates like every endpoint and writes one
    row of ledger_probes; where the configuration leaves it off it does not exist (404)."""
    with httpx.Client(base_url=hub.url, trust_env=False) as anonymous:
        assert anonymous.post(f"{API}/probe").status_code == 401
    enabled = getattr(hub, "db_url", None) is None  # on with SQLite only (see the fixture)
    with hub.client(tokens["ann"]) as api:
        first, second = api.post(f"{API}/probe"), api.post(f"{API}/probe")
    if not enabled:
        assert first.status_code == 404
        return
    assert first.status_code == second.status_code == 201, first.text
    assert second.json()["id"] == first.json()["id"] + 1
    with sqlite3.connect(hub.state / "werkhub.sqlite") as db:
        rows = db.execute("SELECT user FROM ledger_probes ORDER BY id").fetchall()
    assert rows[-2:] == [("ann",), ("ann",)]


def test_64_clients_race_for_the_last_gpus(hub: Werkhub, tokens: dict[str, str]) -> None:
    slot = {"gpu_type": "H100", "start": at(60), "duration_minutes": 60}
    end = (datetime.fromisoformat(slot["start"]) + timedelta(hours=1)).isoformat()
    with hub.client(tokens["ann"]) as api:
        assert post(api, count=2, **slot).status_code == 201  # 2 of 4 left
    racers = [hub.create_user(f"racer{i}") for i in range(64)]
    barrier = threading.Barrier(64)

    def race(token: str) -> int:
        with hub.client(token) as api:
            barrier.wait()
            return post(api, count=1, **slot).status_code

    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(race, racers))
    assert codes.count(201) == 2 and codes.count(409) == 62, codes
    with hub.admin() as api:
        held = api.get(
            f"{API}/bookings",
            # the slot as booked: at() read again after a full hour had passed (a slow
            # race) named the next hour, whose window holds none of these bookings
            params={"gpu_type": "H100", "start": slot["start"], "end": end, "state": "booked"},
        ).json()
    assert sum(b["count"] for b in held) == 4
    assert len({d for b in held for d in b["devices"]}) == 4


def service_pid(hub: Werkhub) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if "werkhub.service.app" in cmd and cwd == str(hub.state.resolve()):
            return int(entry.name)
    raise AssertionError("werkhub service process not found")


def test_sigkill_mid_load_loses_no_acknowledged_booking(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with hub.client(tokens["ann"] if worker % 2 else tokens["ben"]) as api:
            n = 0
            while not stop.is_set():
                hour = 200 + worker * 400 + n  # every request its own free slot
                try:
                    reply = post(api, gpu_type="L40S", count=1, start=at(hour), duration_minutes=30)
                except httpx.HTTPError:
                    reply = None
                if reply is not None and reply.status_code == 201:
                    with lock:
                        acknowledged.append(reply.json()["id"])
                n += 1

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(2)
    old = service_pid(hub)
    os.kill(old, signal.SIGKILL)
    time.sleep(1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the hub restarts its managed service
        try:
            if httpx.get(f"{hub.url}{API}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    for w in workers:
        w.join()
    assert service_pid(hub) != old
    assert len(acknowledged) > 5
    with hub.admin() as api:
        for booking_id in acknowledged:
            reply = api.get(f"{API}/bookings/{booking_id}")
            assert reply.status_code == 200, booking_id
            booking = reply.json()
            assert len(booking["devices"]) == booking["count"] == 1
            assert booking["audit"][0]["action"] == "create"
        everything = api.get(f"{API}/bookings", params={"limit": 1000}).json()
    # nothing half-written: every stored booking has its units and its audit entry
    for booking in everything:
        assert len(booking["devices"]) == booking["count"] and booking["audit"], booking
