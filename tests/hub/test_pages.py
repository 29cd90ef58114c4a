"""Hub pages of the werkhub service, through a browser-like cookie session (no JS engine:
the tests send exactly what the pages' werkhub.js sends)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.hub import Werkhub, make_werkhub

pytestmark = pytest.mark.hub
SVC = "/services/werkhub"
API = f"{SVC}/api"
NODES = [
    {"name": "n1", "devices": [{"index": i, "model": "H100", "memory_gb": 80} for i in range(2)]}
]
PAGES = ["/", "/book", "/jobs", "/reports"]
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": "rows = 10\n",
            "outputs": [],
            "execution_count": None,
        },
        {
            "cell_type": "code",
            "metadata": {},
            "source": "print(rows)\n",
            "outputs": [],
            "execution_count": None,
        },
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    werkhub = make_werkhub(
        tmp_path_factory.mktemp("pages"),
        {"gpus": {"nodes": NODES, "simulated": True}, "services": {"mlflow": {"enabled": False}}},
    )
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


def login(hub: Werkhub, name: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=hub.url, follow_redirects=True, timeout=30)
    page = browser.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf
    reply = browser.post(
        "/hub/login", data={"username": name, "password": password, "_xsrf": xsrf.group(1)}
    )
    assert "Invalid username" not in reply.text
    landing = browser.get(f"{SVC}/", headers={"Accept": "text/html"})  # OAuth round trip
    assert landing.status_code == 200, landing.text[:300]
    return browser


def new_user(hub: Werkhub, name: str, groups: tuple[str, ...] = ()) -> httpx.Client:
    """A user made with ``werkhub users add`` (in ``groups`` from the start, so no cached
    view of them lacks a group), logged in."""
    result = hub.cli("users", "add", name, *(f"--group={g}" for g in groups))
    assert result.returncode == 0, result.stderr
    password = re.search(r"Password \(shown once\): (\S+)", result.stdout)
    assert password
    return login(hub, name, password.group(1))


def csrf(page: str) -> str:
    found = re.search(r'<meta name="werkhub-csrf" content="([0-9a-f]{64})">', page)
    assert found, "page without CSRF token"
    return found.group(1)


@pytest.fixture(scope="module")
def anna(hub: Werkhub) -> Iterator[httpx.Client]:
    browser = new_user(hub, "page-anna")
    yield browser
    browser.close()


def test_pages_render_for_a_logged_in_user(hub: Werkhub, anna: httpx.Client) -> None:
    for path in PAGES:
        reply = anna.get(f"{SVC}{path}")
        assert reply.status_code == 200, (path, reply.text[:300])
        assert reply.headers["content-type"].startswith("text/html")
        page = reply.text
        assert "Signed in as <strong>page-anna</strong>" in page
        assert '<html lang="en">' in page and 'name="viewport"' in page
        assert 'data-testid="nav-book"' in page and 'id="main"' in page
        assert 'data-testid="nav-admin"' not in page  # not an admin
    book = anna.get(f"{SVC}/book").text
    assert 'data-testid="calendar-H100"' in book and "simulated" in book
    assert book.count('<tr><th scope="row">') == 7  # a week, one row per day
    for control in ("gpu_type", "count", "start", "hours", "now", "waitlist"):
        assert f'<label for="{control}">' in book and f'id="{control}"' in book
    assert 'data-testid="no-bookings"' in book


def test_admin_page_is_for_admins_only(hub: Werkhub, anna: httpx.Client) -> None:
    reply = anna.get(f"{SVC}/admin")
    assert reply.status_code == 403 and "administrators only" in reply.text
    assert hub.first_password
    admin = login(hub, "admin", hub.first_password)
    try:
        anna_books = anna.get(f"{SVC}/book")
        reply = anna.post(
            f"{API}/bookings",
            json={"gpu_type": "H100", "count": 1, "start": "now", "duration_minutes": 60},
            headers={"X-Werkhub-Csrf": csrf(anna_books.text)},
        )
        assert reply.status_code == 201, reply.text
        page = admin.get(f"{SVC}/admin?days=7")
        assert page.status_code == 200, page.text[:300]
        text = page.text
        assert 'data-testid="nav-admin"' in text
        assert "<svg" in text and "GPU-hours per user, last 7 days" in text
        assert "page-anna" in text and "booked" in text and "used" in text
        assert 'data-testid="policies"' in text and "everyone (default)" in text
        assert f"<td>{reply.json()['id']}</td><td>page-anna</td>" in text
        assert admin.get(f"{SVC}/admin?days=0").status_code == 422
    finally:
        admin.close()


def test_booking_through_the_page(hub: Werkhub) -> None:
    browser = new_user(hub, "page-ben")
    page = browser.get(f"{SVC}/book").text
    token = csrf(page)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    body = {
        "gpu_type": "H100",
        "count": 2,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
    }
    # what werkhub.js sends: JSON with the CSRF header and the cookie
    reply = browser.post(f"{API}/bookings", json=body, headers={"X-Werkhub-Csrf": token})
    assert reply.status_code == 201, reply.text
    booking = reply.json()
    page = browser.get(f"{SVC}/book").text
    row = re.search(rf'<tr data-booking="{booking["id"]}".*?</tr>', page, re.S)
    assert row and "2 x H100" in row.group(0) and "booked" in row.group(0)
    for action in ("extend", "shorten", "cancel"):
        assert f'data-testid="{action}-{booking["id"]}"' in row.group(0)
    local = start.astimezone(datetime.fromisoformat(booking["start_local"]).tzinfo)
    assert f"{local:%a %d %b %H}:00: 0 of 2 free" in page  # the calendar shows it taken
    # extend by the page's mechanism (PATCH end + 1 h)
    end = datetime.fromisoformat(booking["end"]) + timedelta(hours=1)
    reply = browser.patch(
        f"{API}/bookings/{booking['id']}",
        json={"end": end.isoformat()},
        headers={"X-Werkhub-Csrf": token},
    )
    assert reply.status_code == 200, reply.text
    assert datetime.fromisoformat(reply.json()["end"]) == end
    # cancel
    reply = browser.delete(f"{API}/bookings/{booking['id']}", headers={"X-Werkhub-Csrf": token})
    assert reply.status_code == 200 and reply.json()["state"] == "cancelled"
    assert 'data-testid="no-bookings"' in browser.get(f"{SVC}/book").text


def test_cookie_requests_without_csrf_token_are_refused(hub: Werkhub) -> None:
    browser = new_user(hub, "page-cleo")
    body = {"gpu_type": "H100", "count": 1, "start": "now", "duration_minutes": 30}
    missing = browser.post(f"{API}/bookings", json=body)
    assert missing.status_code == 403 and "X-Werkhub-Csrf" in missing.json()["detail"]
    wrong = browser.post(f"{API}/bookings", json=body, headers={"X-Werkhub-Csrf": "0" * 64})
    assert wrong.status_code == 403
    token = csrf(browser.get(f"{SVC}/book").text)
    cross = browser.post(
        f"{API}/bookings",
        json=body,
        headers={"X-Werkhub-Csrf": token, "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert browser.get(f"{API}/bookings").json() == []  # nothing stored
    # reading needs no token; a hub token in the header needs none either
    assert browser.get(f"{API}/quota").status_code == 200
    with hub.client(hub.create_user("page-cleo")) as api:
        assert api.post(f"{API}/bookings", json=body).status_code == 201


def test_jobs_and_reports_pages_list_own_items_only(hub: Werkhub, anna: httpx.Client) -> None:
    token = hub.create_user("page-anna")
    home = hub.state / "homes" / "page-anna"
    home.mkdir(parents=True, exist_ok=True)
    (home / "daily.ipynb").write_text(json.dumps(NOTEBOOK))
    spec = {
        "name": "daily-page-report",
        "notebook": "daily.ipynb",
        "parameters": {"rows": 5},
        "schedule": {"kind": "cron", "cron": "0 6 * * 1-5", "tz": "Europe/Berlin"},
    }
    with hub.client(token) as api:
        reply = api.post(f"{API}/jobs", json=spec)
        assert reply.status_code == 201, reply.text
        job = reply.json()
    page = anna.get(f"{SVC}/jobs").text
    assert f'data-testid="job-{job["id"]}"' in page and "daily-page-report" in page
    assert "0 6 * * 1-5" in page and f'data-testid="job-run-{job["id"]}"' in page
    other = new_user(hub, "page-dan")
    assert "daily-page-report" not in other.get(f"{SVC}/jobs").text
    assert 'data-testid="no-jobs"' in other.get(f"{SVC}/jobs").text
    assert 'data-testid="no-reports"' in other.get(f"{SVC}/reports").text


def test_no_external_urls_anywhere(hub: Werkhub, anna: httpx.Client) -> None:
    texts = [anna.get(f"{SVC}{path}").text for path in PAGES]
    texts += [anna.get(f"{SVC}/static/{name}").text for name in ("werkhub.css", "werkhub.js")]
    for text in texts:
        cleaned = text.replace("http://www.w3.org/2000/svg", "")  # an XML namespace, not a fetch
        assert not re.search(r"https?://", cleaned), re.search(r".{40}https?://.{40}", cleaned)
        assert not re.search(r"""(src|href)\s*=\s*["']?//""", cleaned)
        assert "@import" not in cleaned and "fonts.googleapis" not in cleaned
        for url in re.findall(r"""(?:src|href)="([^"]+)\"""", cleaned):
            assert url.startswith(("/", "#")), url


def test_hub_home_links_the_pages(hub: Werkhub, anna: httpx.Client) -> None:
    home = anna.get("/hub/home")
    assert home.status_code == 200
    assert 'data-testid="werkhub-links"' in home.text
    assert 'href="/services/werkhub/book"' in home.text
    assert 'href="/services/werkhub/reports"' in home.text
    assert "/services/werkhub/admin" not in home.text  # not an admin


def test_failed_job_notice_on_home_and_jobs_pages(hub: Werkhub, anna: httpx.Client) -> None:
    """A failed run notifies its owner on the hub pages (with a link to its report); other
    people's pages do not show it."""
    token = hub.create_user("page-anna")
    home = hub.state / "homes" / "page-anna"
    home.mkdir(parents=True, exist_ok=True)
    broken = json.loads(json.dumps(NOTEBOOK))
    broken["cells"][1]["source"] = "raise RuntimeError('sensor file missing')\n"
    (home / "broken.ipynb").write_text(json.dumps(broken))
    spec = {
        "name": "broken-line-report",
        "notebook": "broken.ipynb",
        "schedule": {"kind": "cron", "cron": "0 6 * * 1-5"},
        "retries": {"max": 0},
    }
    with hub.client(token) as api:
        reply = api.post(f"{API}/jobs", json=spec)
        assert reply.status_code == 201, reply.text
        run = api.post(f"{API}/jobs/{reply.json()['id']}/run").json()
        deadline = datetime.now(UTC) + timedelta(seconds=120)
        notes: list[dict] = []
        while datetime.now(UTC) < deadline:
            notes = [n for n in api.get(f"{API}/notifications").json() if n["run_id"] == run["id"]]
            if notes:
                break
            time.sleep(0.5)
    (note,) = notes
    assert note["kind"] == "job_failed" and "broken-line-report" in note["message"]
    for path in ("/", "/jobs"):
        page = anna.get(f"{SVC}{path}").text
        assert f'data-testid="notice-{note["id"]}"' in page, path
        assert "broken-line-report" in page and f"{API}/reports/{run['id']}" in page
    other = new_user(hub, "page-eve")
    for path in ("/", "/jobs"):
        page = other.get(f"{SVC}{path}").text
        assert "broken-line-report" not in page and 'data-testid="no-notifications"' in page
    # eve cannot dismiss anna's notice (404, nothing changes); bad bodies get a reason
    eve_token = csrf(other.get(f"{SVC}/jobs").text)
    for body, status, words in (
        ({"ids": [note["id"]]}, 404, f"no notification {note['id']} of yours"),
        ({}, 422, 'request body: give either "ids"'),
        ({"ids": []}, 422, '"ids" is empty'),
        ({"ids": ["one"]}, 422, "integer"),
        ({"ids": [note["id"]], "all": True}, 422, 'either "ids"'),
    ):
        reply = other.post(
            f"{API}/notifications/read", json=body, headers={"X-Werkhub-Csrf": eve_token}
        )
        assert reply.status_code == status and words in reply.json()["detail"], reply.text
    assert f'data-testid="notice-{note["id"]}"' in anna.get(f"{SVC}/jobs").text
    # anna dismisses it as the page's button does: it leaves her pages, the run stays
    page = anna.get(f"{SVC}/jobs").text
    assert f'data-testid="notice-read-{note["id"]}"' in page
    reply = anna.post(
        f"{API}/notifications/read",
        json={"ids": [note["id"]]},
        headers={"X-Werkhub-Csrf": csrf(page)},
    )
    assert reply.status_code == 200 and reply.json() == {"marked": 1}, reply.text
    for path in ("/", "/jobs"):
        page = anna.get(f"{SVC}{path}").text
        assert f'data-testid="notice-{note["id"]}"' not in page, path
    assert "broken-line-report" in anna.get(f"{SVC}/jobs").text  # the job and its runs
