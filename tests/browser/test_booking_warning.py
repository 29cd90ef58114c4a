"""Issue 4 in the browser: a booking that ends within ``booking.warn_minutes`` is announced
inside JupyterLab as a notification with an "Extend" action; once the booking is extended
the warning goes away and does not come back (not on the next polls, not after a reload).
"""

from __future__ import annotations

import re
from datetime import datetime

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import POLL_SECONDS, BrowserHub, Shots, wait_for_lab
from tests.support.hub import Werkhub

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
TOAST = ".Toastify__toast"
WARN_WITHIN = 20  # minutes: a booking this short is within warn_minutes (30) at once


def book_now(hub: Werkhub, token: str, minutes: int) -> dict:
    with hub.client(token) as api:
        reply = api.post(
            f"{API}/bookings",
            json={"gpu_type": "H100", "count": 1, "start": "now", "duration_minutes": minutes},
        )
    assert reply.status_code == 201, reply.text
    return reply.json()


def notifications_route(hub: Werkhub, token: str, user: str) -> httpx.Response:
    with hub.client(token) as api:
        return api.get(f"/user/{user}/werkhub/notifications")


def test_route_needs_a_login_and_answers_the_owner_state(browser_hub: BrowserHub) -> None:
    hub, token = browser_hub.hub, browser_hub.tokens["bob"]
    hub.spawn("bob", token)
    with hub.client() as anonymous:
        refused = anonymous.get("/user/bob/werkhub/notifications", follow_redirects=False)
    assert refused.status_code in (302, 401, 403), refused.status_code
    reply = notifications_route(hub, token, "bob")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["booking"] is None and body["warnings"] == []
    assert body["poll_seconds"] == POLL_SECONDS
    assert body["book_url"] == "/services/werkhub/book"
    # another user's token does not reach bob's server (the hub refuses it)
    with hub.client(browser_hub.tokens["alice"]) as api:
        foreign = api.get("/user/bob/werkhub/notifications", follow_redirects=False)
    assert foreign.status_code in (302, 403, 404), foreign.status_code
    with hub.client(token) as api:
        api.delete("/hub/api/users/bob/server")


def warning_toast(page: Page):  # -> Locator
    return page.locator(TOAST, has_text=re.compile(r"ends at \d\d:\d\d"))


def test_booking_end_warning_in_jupyterlab(browser_hub: BrowserHub, login, shots: Shots) -> None:
    hub, token = browser_hub.hub, browser_hub.tokens["carol"]
    booking = book_now(hub, token, minutes=WARN_WITHIN)
    hub.spawn("carol", token)
    page = login("carol")
    wait_for_lab(page, f"{browser_hub.url}/user/carol/lab")
    expect(page.locator(".jp-LauncherCard", has_text="Template gallery")).to_be_visible()
    shots(page, "lab-launcher")

    # the service warns (tick), the server extension passes it on, the front end shows it
    toast = warning_toast(page)
    expect(toast).to_be_visible(timeout=60_000)
    expect(toast).to_contain_text(f"Your booking {booking['id']}")
    extend = toast.get_by_role("button", name="Extend")
    expect(extend).to_be_visible()
    shots(page, "booking-end-warning")
    state = notifications_route(hub, token, "carol").json()
    assert [w["booking_id"] for w in state["warnings"]] == [booking["id"]]
    assert state["booking"]["id"] == booking["id"]

    # "Extend" opens the booking page; extend there by one hour
    with page.context.expect_page() as opened:
        extend.click()
    book = opened.value
    book._werkhub_user = "carol"  # type: ignore[attr-defined]
    book.wait_for_load_state()
    assert book.url.startswith(f"{browser_hub.url}/services/werkhub/book"), book.url
    row = book.get_by_test_id(f"booking-{booking['id']}")
    expect(row).to_be_visible()
    shots(book, "booking-page-from-warning", narrow=True)
    book.get_by_test_id(f"extend-{booking['id']}").click()
    with hub.client(token) as api:
        deadline_ok = False
        for _ in range(60):
            now = api.get(f"{API}/bookings/{booking['id']}").json()
            if datetime.fromisoformat(now["end"]) > datetime.fromisoformat(booking["end"]):
                deadline_ok = True
                break
            page.wait_for_timeout(500)
    assert deadline_ok, "the booking page did not extend the booking"
    shots(book, "booking-extended")
    book.close()

    # JupyterLab: the warning is gone, an info says until when the booking now runs
    expect(warning_toast(page)).to_have_count(0, timeout=30_000)
    extended = page.locator(TOAST, has_text=f"Booking {booking['id']} extended")
    expect(extended).to_be_visible(timeout=30_000)
    shots(page, "extended-info")
    page.wait_for_timeout(3 * POLL_SECONDS * 1000)
    expect(warning_toast(page)).to_have_count(0)
    assert notifications_route(hub, token, "carol").json()["warnings"] == []

    # not after a reload either
    wait_for_lab(page, f"{browser_hub.url}/user/carol/lab")
    page.wait_for_timeout(3 * POLL_SECONDS * 1000)
    expect(warning_toast(page)).to_have_count(0)
    shots(page, "after-reload-no-warning")
    with hub.client(token) as api:
        api.delete("/hub/api/users/carol/server")
