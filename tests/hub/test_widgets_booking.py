"""booking() widget logic without a kernel, against a real werkhub (hub, proxy, service)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.hub import Werkhub, make_werkhub, server_env
from werkhub_widgets import WerkhubClient
from werkhub_widgets.booking import BookingWidget

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
NODES = [
    {"name": "n1", "devices": [{"index": i, "model": "H100", "memory_gb": 80} for i in range(2)]},
    {"name": "n2", "devices": [{"index": 0, "model": "L40S", "memory_gb": 48}]},
]
POLICIES = {
    "default": {
        "gpu_hours_per_week": 6,
        "max_booking_hours": 4,
        "max_advance_days": 14,
        "max_concurrent_gpus": 2,
    }
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    werkhub = make_werkhub(
        tmp_path_factory.mktemp("widgets-booking"),
        {
            "gpus": {"nodes": NODES, "simulated": True},
            "booking": {"policies": POLICIES},
            "services": {"mlflow": {"enabled": False}},
        },
    )
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


def widget(hub: Werkhub, name: str, **kwargs: object) -> BookingWidget:
    client = WerkhubClient(f"{hub.url}/services/werkhub/", hub.create_user(name))
    return BookingWidget(client, server_env={}, **kwargs)  # a CPU-only server


def next_hour(days: int = 1) -> datetime:
    now = datetime.now(UTC) + timedelta(days=days)
    return now.replace(minute=0, second=0, microsecond=0)


def test_shows_availability_quota_and_books(hub: Werkhub) -> None:
    w = widget(hub, "wb-ann")
    assert w.error is None, w.message.value
    assert list(w.gpu_type.options) == ["H100", "L40S"]
    assert w.gpu_type.value == "H100"  # a real choice is preselected, never an empty box
    assert "<b>6</b> of 6 GPU-hours" in w.quota_html.value
    assert "simulated" in w.quota_html.value
    # 7 days x 24 hours per type, each cell with the free count
    assert w.grid.value.count("<tr><th>") == 2 * (1 + 7)  # header + one row per day
    start = next_hour()
    local = start.astimezone(w.tz)
    cells_before = w.grid_cells("H100")
    assert cells_before[(local.date().isoformat(), local.hour)] == 2

    booked = w.book("H100", 2, local.strftime("%Y-%m-%d %H:%M"), 1.5)
    assert booked is not None, w.message.value
    assert booked["count"] == 2 and datetime.fromisoformat(booked["start"]) == start
    assert "Booked 2 x H100" in w.message.value and "wh-ok" in w.message.value
    # the grid was redrawn from the service: that hour is now full
    assert w.grid_cells("H100")[(local.date().isoformat(), local.hour)] == 0
    assert "<b>3</b> of 6 GPU-hours" in w.quota_html.value
    rows = [row.children[0].value for row in w.bookings_box.children]
    assert any(f"#{booked['id']}" in r and "booked" in r and "n1/0, n1/1" in r for r in rows)
    # a future booking on a CPU server: the restart offer waits for its start
    assert "come back then" in w.restart_box.children[0].value
    # the form itself, as a person uses it: pick, fill in, click "Book"
    later = next_hour(days=5).astimezone(w.tz).strftime("%Y-%m-%d %H:%M")
    w.gpu_type.value, w.count.value, w.start.value, w.hours.value = "L40S", 1, later, 0.5
    w.book_button.click()
    assert "Booked 1 x L40S" in w.message.value, w.message.value
    assert w.gpu_type.value == "L40S"  # the choice survives the redraw


def test_errors_appear_in_the_widget_not_as_tracebacks(hub: Werkhub) -> None:
    w = widget(hub, "wb-bob")
    too_long = w.book("L40S", 1, "now", 5)
    assert too_long is None
    assert "wh-error" in w.message.value
    assert "Not allowed" in w.message.value and "at most 4 h" in w.message.value
    # beyond the weekly quota (6 GPU-hours): 2 x 3 h fits, then 1 x 1 h more does not
    day = next_hour(days=2).astimezone(w.tz)
    assert w.book("H100", 2, day.strftime("%Y-%m-%d %H:%M"), 3) is not None, w.message.value
    later = (day + timedelta(hours=5)).strftime("%Y-%m-%d %H:%M")
    assert w.book("L40S", 1, later, 1) is None
    assert "Not allowed" in w.message.value and "GPU-hours" in w.message.value
    with hub.client(hub.create_user("wb-bob")) as api:
        mine = api.get(f"{API}/bookings").json()
    assert len(mine) == 1  # nothing half-written
    # input the widget checks itself
    assert w.book("H100", 1, "tomorrow morning", 1) is None
    assert "start:" in w.message.value and "2025-06-03 14:00" in w.message.value
    assert w.book("H100", 1, "now", 0) is None
    assert "hours" in w.message.value
    # a conflict names the earliest free slot
    other = widget(hub, "wb-cid")
    assert other.book("H100", 1, day.strftime("%Y-%m-%d %H:%M"), 1) is None
    assert "Conflict" in other.message.value and "earliest free slot" in other.message.value


def test_extend_shorten_cancel_release_and_waitlist(hub: Werkhub) -> None:
    w = widget(hub, "wb-dora")
    start = next_hour(days=3).astimezone(w.tz)
    b = w.book("L40S", 1, start.strftime("%Y-%m-%d %H:%M"), 1)
    assert b is not None, w.message.value
    end = datetime.fromisoformat(b["end"])
    assert w.extend(b["id"]) is not None, w.message.value
    assert "extended" in w.message.value
    assert datetime.fromisoformat(w.current[0]["end"]) == end + timedelta(hours=1)
    assert w.shorten(b["id"], 0.5) is not None, w.message.value
    assert datetime.fromisoformat(w.current[0]["end"]) == end + timedelta(minutes=30)
    assert w.cancel(b["id"]) is not None
    assert "cancelled" in w.message.value and w.current == []
    # release a running booking
    now = w.book("L40S", 1, "now", 1)
    assert now is not None, w.message.value
    assert [r.description for r in w.bookings_box.children[0].children[1:]] == [
        "+1 h",
        "-1 h",
        "Release",
    ]
    assert w.release(now["id"]) is not None, w.message.value
    assert "released" in w.message.value and w.current == []
    # another user's booking: 404 in the widget, nothing changed
    eve = widget(hub, "wb-eve")
    mine = w.book("L40S", 1, start.strftime("%Y-%m-%d %H:%M"), 1)
    assert mine is not None
    assert eve.cancel(mine["id"]) is None
    assert "Not found" in eve.message.value
    assert w.current and w.current[0]["state"] == "booked"
    # waitlist entries show up and can be left
    with hub.client(hub.create_user("wb-eve")) as api:
        reply = api.post(
            f"{API}/bookings",
            json={
                "gpu_type": "L40S",
                "count": 1,
                "start": start.isoformat(),
                "end": (start + timedelta(hours=1)).isoformat(),
                "waitlist": True,
                "latest_start": (start + timedelta(minutes=30)).isoformat(),
            },
        )
        assert reply.status_code == 202, reply.text
    eve.refresh()
    assert (
        len(eve.waiting) == 1
        and "Waiting: 1 x L40S" in eve.waitlist_box.children[0].children[0].value
    )
    assert eve.leave_waitlist(eve.waiting[0]["id"]) is not None
    assert eve.waiting == [] and "left the waitlist" in eve.message.value


def test_restart_cpu_server_onto_booking(hub: Werkhub) -> None:
    token = hub.create_user("wb-finn")
    hub.spawn("wb-finn", token)
    assert "WERKHUB_BOOKING_ID" not in server_env(hub, "wb-finn")
    w = BookingWidget(WerkhubClient(f"{hub.url}/services/werkhub/", token), server_env={})
    b = w.book("H100", 1, "now", 1)
    assert b is not None, w.message.value
    offer = w.restart_box.children[0]
    assert offer.description == f"Restart my server onto booking #{b['id']}"
    answer = w.restart_onto(b["id"])
    assert answer is not None and answer["status"] == "restarting", w.message.value
    assert "reload the page" in w.message.value
    deadline = time.monotonic() + 90
    env: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            env = server_env(hub, "wb-finn")
        except AssertionError:
            env = {}
        if env.get("WERKHUB_BOOKING_ID") == str(b["id"]):
            break
        time.sleep(0.5)
    assert env.get("WERKHUB_BOOKING_ID") == str(b["id"])
    hub.spawn("wb-finn", token)  # ready again (already running: answers at once)
    # the home folder is the same, files kept
    assert (hub.state / "homes" / "wb-finn").is_dir()
    # a future booking or someone else's cannot be restarted onto
    later = w.book("L40S", 1, next_hour(days=4).astimezone(w.tz).strftime("%Y-%m-%d %H:%M"), 1)
    assert later is not None
    assert w.restart_onto(later["id"]) is None and "starts at" in w.message.value
    other = widget(hub, "wb-gus")
    assert other.restart_onto(b["id"]) is None and "Not found" in other.message.value


def test_not_inside_a_server_is_a_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WERKHUB_SERVICE_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    w = BookingWidget(server_env={})
    assert w.client is None and "Not inside a werkhub server" in w.message.value
    w.refresh()
    assert "Not inside a werkhub server" in w.message.value
