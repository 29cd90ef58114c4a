"""Borrowing and reclaim on a real hub (local spawner, simulated GPUs): organisation B's
member runs a server on borrowed GPUs with a file in their home; organisation A books
within its guarantee; the holder is warned (a ``reclaim`` notification, and the warning
the JupyterLab extension polls from the server's ``werkhub/notifications``); at the reclaim
time the server restarts without GPUs with the file still there, A's booking gets the
GPUs, and B's guaranteed booking is never touched.

The lead time is ``booking.warn_minutes`` (15 by default; one minute here, with a
one-second tick), so the test waits for real minutes instead of patching a clock in
another process: the ledger tests move the ``utcnow`` seam for the default lead time
(tests/booking/test_org_guarantees.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.support.hub import Werkhub, running_werkhub, server_env
from werkhub_widgets import WerkhubClient
from werkhub_widgets.booking import BookingWidget

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
NODES = [
    {"name": "rc", "devices": [{"index": i, "model": "H100", "memory_gb": 80} for i in range(3)]}
]
ORGS = {"ra": ("ra-al", 2), "rb": ("rb-gu", 1)}  # slug: (an admin, guaranteed H100)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "gpus": {"nodes": NODES, "simulated": True},
        "services": {"mlflow": {"enabled": False}},
        # end_action stays "stop" for ordinary ends: a reclaim restarts without GPUs anyway
        "booking": {"tick_seconds": 1, "warn_minutes": 1},
    }
    with running_werkhub(tmp_path_factory.mktemp("reclaim"), extra) as werkhub:
        yield werkhub


def book(hub: Werkhub, token: str, count: int, minutes: int = 60) -> Any:
    with hub.client(token) as api:
        return api.post(
            f"{API}/bookings",
            json={"gpu_type": "H100", "count": count, "start": "now", "duration_minutes": minutes},
        )


def env_of(hub: Werkhub, name: str) -> dict[str, str]:
    try:
        return server_env(hub, name)
    except AssertionError:
        return {}


def test_borrowed_gpus_are_reclaimed_with_a_warning_and_the_server_keeps_its_files(
    hub: Werkhub,
) -> None:
    tokens = {n: hub.create_user(n) for n in ("ra-al", "ra-ed", "rb-gu", "rb-bo")}
    with hub.admin() as admin:
        for slug, (head, guarantee) in ORGS.items():
            assert admin.post(f"{API}/orgs", json={"slug": slug, "name": slug.upper()}).is_success
            put = admin.put(f"{API}/orgs/{slug}/members/{head}", json={"admin": True})
            assert put.status_code == 200, put.text
            put = admin.put(f"{API}/orgs/{slug}/guarantees", json={"H100": guarantee})
            assert put.status_code == 200, put.text
        for slug, member in (("rb", "rb-bo"), ("ra", "ra-ed")):
            put = admin.put(f"{API}/orgs/{slug}/members/{member}", json={"admin": False})
            assert put.status_code == 200, put.text

    # B: one GPU within its guarantee, then two borrowed (the site's last two)
    kept = book(hub, tokens["rb-gu"], 1)
    assert kept.status_code == 201 and kept.json()["borrowed"] is False, kept.text
    lent = book(hub, tokens["rb-bo"], 2)
    assert lent.status_code == 201 and lent.json()["borrowed"] is True, lent.text
    lent_id, lent_units = lent.json()["id"], lent.json()["devices"]
    with hub.client(tokens["rb-bo"]) as api:
        started = api.post("/hub/api/users/rb-bo/server", json={"gpu": "booking"})
        assert started.status_code in (201, 202), started.text
    hub.spawn("rb-bo", tokens["rb-bo"])
    first = server_env(hub, "rb-bo")
    assert first["WERKHUB_BOOKING_ID"] == str(lent_id) and first["WERKHUB_GPU_COUNT"] == "2"
    with hub.client(tokens["rb-bo"]) as api:
        saved = api.put(
            "/user/rb-bo/api/contents/borrowed.txt",
            json={"type": "file", "format": "text", "content": "kept across the reclaim"},
        )
        assert saved.status_code in (200, 201), saved.text

    # A books its guarantee: only B's borrowed booking stands in the way
    claim = book(hub, tokens["ra-al"], 2)
    assert claim.status_code == 201, claim.text
    claimed = claim.json()
    assert claimed["borrowed"] is False and sorted(claimed["devices"]) == sorted(lent_units)
    reclaim_at = datetime.fromisoformat(claimed["start"])
    # beyond A's guarantee nothing is reclaimed: a refusal that says why
    beyond = book(hub, tokens["ra-ed"], 1)
    assert beyond.status_code == 409 and "not free" in beyond.json()["detail"], beyond.text

    with hub.client(tokens["rb-bo"]) as api:
        cut = api.get(f"{API}/bookings/{lent_id}").json()
        notes = api.get(f"{API}/notifications").json()
        lab = api.get("/user/rb-bo/werkhub/notifications")
    assert datetime.fromisoformat(cut["end"]) == reclaim_at and cut["state"] == "active"
    assert [a["action"] for a in cut["audit"]].count("reclaim") == 1
    told = [n for n in notes if n["kind"] == "reclaim" and n["booking_id"] == lent_id]
    assert told, notes
    text = told[0]["message"]
    assert "reclaimed by organisation 'ra' at" in text
    assert "restarts without GPUs, files are kept" in text
    # the warning JupyterLab shows, through the route the extension polls
    assert lab.status_code == 200, lab.text
    warnings = lab.json()["warnings"]
    assert [(w["kind"], w["booking_id"]) for w in warnings] == [("reclaim", lent_id)], warnings
    assert warnings[0]["message"] == (
        f"Your borrowed GPUs are reclaimed by ra at {warnings[0]['end_hhmm']}; "
        "the server restarts without GPUs, files are kept."
    )
    assert warnings[0]["end_hhmm"] in text
    # and on the bookings page and in the notebook's booking widget
    with hub.client(tokens["rb-bo"]) as api:
        page = api.get("/services/werkhub/book")
    assert page.status_code == 200 and f'data-testid="borrowed-{lent_id}"' in page.text
    shown = page.text.split(f'data-testid="reclaim-{lent_id}">', 1)[1].split("</p>", 1)[0]
    assert shown.startswith("Your borrowed GPUs are reclaimed by ra at "), shown
    assert warnings[0]["end_hhmm"] in shown and "files are kept" in shown
    client = WerkhubClient(f"{hub.url}/services/werkhub/", tokens["rb-bo"])
    rows = [r.children[0].value for r in BookingWidget(client, server_env={}).bookings_box.children]
    assert any("borrowed" in r and "reclaimed by ra at" in r for r in rows), rows

    # at the reclaim time the server restarts without GPUs; its files stay
    deadline = time.monotonic() + 240
    env = first
    while time.monotonic() < deadline and env.get("WERKHUB_GPU_COUNT") != "0":
        time.sleep(1)
        env = env_of(hub, "rb-bo")
    assert env.get("WERKHUB_GPU_COUNT") == "0", "the reclaimed server kept its GPUs"
    assert datetime.now(reclaim_at.tzinfo) >= reclaim_at  # not before the warned time
    hub.spawn("rb-bo", tokens["rb-bo"])
    with hub.client(tokens["rb-bo"]) as api:
        content = api.get("/user/rb-bo/api/contents/borrowed.txt").json()["content"]
        assert content == "kept across the reclaim"
        assert api.get(f"{API}/bookings/{lent_id}").json()["state"] == "ended"

    # A's booking now holds those GPUs: its server starts on them
    with hub.client(tokens["ra-al"]) as api:
        started = api.post("/hub/api/users/ra-al/server", json={"gpu": "booking"})
        assert started.status_code in (201, 202), started.text
    hub.spawn("ra-al", tokens["ra-al"])
    theirs = server_env(hub, "ra-al")
    assert theirs["WERKHUB_BOOKING_ID"] == str(claimed["id"])
    assert sorted(theirs["WERKHUB_GPU_UNITS"].split(",")) == sorted(lent_units)

    # B's guaranteed booking was never reclaimed
    with hub.admin() as admin:
        guaranteed = admin.get(f"{API}/bookings/{kept.json()['id']}").json()
    assert guaranteed["end"] == kept.json()["end"]
    assert "reclaim" not in [a["action"] for a in guaranteed["audit"]]
    for name in ("rb-bo", "ra-al"):
        hub.stop_server(name, tokens[name])
