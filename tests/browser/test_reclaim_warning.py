"""Issue 16 in the browser: when another organisation reclaims the GPUs a server runs on
(a borrowed booking), JupyterLab shows the reclaim as its own notification: by whom, at
what time, that the server restarts without GPUs and files are kept, with a "Book other
GPUs" action instead of "Extend"; the booking page shows the same under the booking."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BrowserHub, Shots, wait_for_lab

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
TOAST = ".Toastify__toast"
HOLDER, CLAIMER = "rena", "rolf"  # of organisations "rclend" and "rcown"


def test_reclaim_warning_in_jupyterlab(browser_hub: BrowserHub, login, shots: Shots) -> None:
    hub = browser_hub.hub
    tokens = {}
    for name in (HOLDER, CLAIMER):
        browser_hub.passwords[name] = f"{name}-secret-{os.urandom(6).hex()}"
        made = hub.cli(
            "users", "add", name, "--password-stdin", stdin=browser_hub.passwords[name] + "\n"
        )
        assert made.returncode == 0, made.stdout + made.stderr
        tokens[name] = hub.create_user(name)
    orgs = {"rclend": (HOLDER, 0), "rcown": (CLAIMER, 1)}  # guaranteed L40S (the site has 1)
    with hub.admin() as admin:
        for slug, (member, guarantee) in orgs.items():
            assert admin.post(f"{API}/orgs", json={"slug": slug, "name": slug}).status_code == 201
            put = admin.put(f"{API}/orgs/{slug}/members/{member}", json={"admin": False})
            assert put.status_code == 200, put.text
            put = admin.put(f"{API}/orgs/{slug}/guarantees", json={"L40S": guarantee})
            assert put.status_code == 200, put.text
    try:
        body = {"gpu_type": "L40S", "count": 1, "start": "now", "duration_minutes": 120}
        with hub.client(tokens[HOLDER]) as api:
            lent = api.post(f"{API}/bookings", json=body).json()
            assert lent["borrowed"] is True, lent
            started = api.post(f"/hub/api/users/{HOLDER}/server", json={"gpu": "booking"})
            assert started.status_code in (201, 202), started.text
        hub.spawn(HOLDER, tokens[HOLDER])
        page = login(HOLDER)
        wait_for_lab(page, f"{browser_hub.url}/user/{HOLDER}/lab")

        with hub.client(tokens[CLAIMER]) as api:  # within rcown's guarantee: reclaims
            claim = api.post(f"{API}/bookings", json={**body, "duration_minutes": 60}).json()
            assert claim["borrowed"] is False and claim["devices"] == lent["devices"], claim
        toast = page.locator(TOAST, has_text="Your borrowed GPUs are reclaimed by rcown at")
        expect(toast).to_be_visible(timeout=60_000)
        expect(toast).to_contain_text(re.compile(r"at \d\d:\d\d"))
        expect(toast).to_contain_text("the server restarts without GPUs, files are kept.")
        expect(toast.get_by_role("button", name="Book other GPUs")).to_be_visible()
        expect(toast.get_by_role("button", name="Extend")).to_have_count(0)
        page.wait_for_timeout(1000)  # the toast has slid in
        shots(page, "reclaim-warning")

        book = page.context.new_page()
        book._werkhub_user = HOLDER  # type: ignore[attr-defined]
        book.goto(f"{browser_hub.url}/services/werkhub/book")
        note = book.get_by_test_id(f"reclaim-{lent['id']}")
        expect(note).to_contain_text("Your borrowed GPUs are reclaimed by rcown at")
        expect(book.get_by_test_id(f"borrowed-{lent['id']}")).to_be_visible()
        shots(book, "reclaim-on-booking-page", narrow=True)
        book.close()
    finally:  # leave the shared hub as it was: no bookings, servers or organisations
        with hub.client(tokens[CLAIMER]) as api:
            for b in api.get(f"{API}/bookings").json():
                if b["state"] == "booked":
                    api.delete(f"{API}/bookings/{b['id']}")
        with hub.client(tokens[HOLDER]) as api:
            api.delete(f"/hub/api/users/{HOLDER}/server")
            for b in api.get(f"{API}/bookings").json():
                if b["state"] in ("booked", "active"):
                    api.post(f"{API}/bookings/{b['id']}/release")
        with hub.admin() as admin:
            for slug in orgs:
                admin.put(f"{API}/orgs/{slug}/guarantees", json={"L40S": 0})
                admin.delete(f"{API}/orgs/{slug}")
