"""The model endpoints page (/services/werkhub/endpoints) through a browser-like cookie
session: state, URL and per-minute plots of the caller's endpoints and those shared with
their groups (admins: all), the live part the page fetches again, tokens and delete with
what werkhub.js sends, a failed endpoint's reason and log tail; strangers see nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.hub.test_pages import csrf, login, new_user
from tests.support.hub import Werkhub
from tests.support.serving import invoke_body, register_tagged, wait_state

pytestmark = pytest.mark.hub
SVC = "/services/werkhub"
API = f"{SVC}/api"
OWNER, MEMBER, STRANGER = "epp-ann", "epp-ben", "epp-cy"
TEAM = "epp-line"
MODEL = f"{OWNER}~oven"


@pytest.fixture(scope="module")
def browsers(werkhub: Werkhub) -> Iterator[dict[str, httpx.Client]]:
    found = {
        name: new_user(werkhub, name, (TEAM,) if name == MEMBER else ())
        for name in (OWNER, MEMBER, STRANGER)
    }
    yield found
    for browser in found.values():
        browser.close()


@pytest.fixture(scope="module")
def token(werkhub: Werkhub, browsers: dict[str, httpx.Client]) -> str:
    return werkhub.create_user(OWNER)


@pytest.fixture(scope="module")
def versions(werkhub: Werkhub, token: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("page-models")
    return {
        "good": register_tagged(werkhub.url, token, OWNER, MODEL, 1, folder, "champion"),
        "broken": register_tagged(werkhub.url, token, OWNER, MODEL, 3, folder, broken=True),
    }


def invoke(werkhub: Werkhub, token: str, times: int) -> None:
    with httpx.Client(timeout=60) as client:
        for _ in range(times):
            reply = client.post(
                f"{werkhub.url}/endpoints/{OWNER}/line/invocations",
                json=invoke_body(),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert reply.status_code == 200, reply.text


def find_testid(page: str, name: str) -> str:
    """The element with ``data-testid=name`` and what follows it up to its end tag."""
    found = re.search(rf'<(\w+)[^>]*data-testid="{re.escape(name)}".*?</\1>', page, re.S)
    assert found, f"no {name} on the page"
    return found.group(0)


def test_owner_sees_state_url_plots_and_tokens(
    werkhub: Werkhub, browsers: dict[str, httpx.Client], token: str, versions: dict[str, Any]
) -> None:
    ann = browsers[OWNER]
    assert 'data-testid="no-endpoints"' in ann.get(f"{SVC}/endpoints").text
    with werkhub.client(token) as api:
        reply = api.post(
            f"{API}/endpoints", json={"name": "line", "model": MODEL, "groups": [TEAM]}
        )
        assert reply.status_code == 201, reply.text
        wait_state(api, "line", ("ready",))
    invoke(werkhub, token, 3)
    reply = ann.get(f"{SVC}/endpoints")
    assert reply.status_code == 200 and reply.headers["cache-control"] == "no-store"
    page = reply.text
    key = f"{OWNER}-line"
    assert 'data-testid="nav-endpoints" aria-current="page"' in page
    assert "ready" in find_testid(page, f"state-{key}")
    assert find_testid(page, f"serving-{key}").endswith(f">{versions['good']}</strong>")
    assert f"/endpoints/{OWNER}/line/invocations" in find_testid(page, f"url-{key}")
    plot = find_testid(page, f"requests-plot-{key}")
    assert 'data-requests="3"' in plot and "<svg" in plot and "Requests per minute to line" in plot
    assert "<svg" in find_testid(page, f"latency-plot-{key}")
    assert "3 requests, 0 errors in the last 60 minutes" in page
    live_url = f"{SVC}/endpoints/{OWNER}/line/live"
    assert f'data-live="{live_url}"' in page
    assert f'data-testid="tokens-{key}"' in page and f'data-testid="delete-{key}"' in page
    # the live part the page fetches again: the plot moves with more requests
    invoke(werkhub, token, 2)
    live = ann.get(live_url)
    assert live.status_code == 200 and "<html" not in live.text
    assert 'data-requests="5"' in find_testid(live.text, f"requests-plot-{key}")
    # a token, as werkhub.js creates and revokes it (cookie + CSRF header)
    headers = {"X-Werkhub-Csrf": csrf(page)}
    params = {"owner": OWNER}
    assert ann.post(f"{API}/endpoints/line/tokens", json={"note": "oven PC"}).status_code == 403
    made = ann.post(
        f"{API}/endpoints/line/tokens", params=params, headers=headers, json={"note": "oven PC"}
    )
    assert made.status_code == 201, made.text
    new = made.json()
    row = find_testid(ann.get(f"{SVC}/endpoints").text, f"token-{new['id']}")
    assert "oven PC" in row and "active" in row and new["token"] not in row
    revoked = ann.delete(f"{API}/endpoints/line/tokens/{new['id']}", params=params, headers=headers)
    assert revoked.status_code == 200, revoked.text
    assert "revoked" in find_testid(ann.get(f"{SVC}/endpoints").text, f"token-{new['id']}")


def test_shared_admin_and_stranger_views(
    werkhub: Werkhub, browsers: dict[str, httpx.Client], token: str, versions: dict[str, Any]
) -> None:
    key = f"{OWNER}-line"
    member = browsers[MEMBER].get(f"{SVC}/endpoints").text
    assert f"by {OWNER}" in member and f'data-testid="requests-plot-{key}"' in member
    assert f'data-testid="tokens-{key}"' not in member  # may call, not manage
    assert f'data-testid="delete-{key}"' not in member
    assert browsers[MEMBER].get(f"{SVC}/endpoints/{OWNER}/line/live").status_code == 200
    stranger = browsers[STRANGER]
    assert 'data-testid="no-endpoints"' in stranger.get(f"{SVC}/endpoints").text
    assert stranger.get(f"{SVC}/endpoints/{OWNER}/line/live").status_code == 404
    assert werkhub.first_password
    admin = login(werkhub, "admin", werkhub.first_password)
    try:
        page = admin.get(f"{SVC}/endpoints").text
        assert f'data-testid="endpoint-{key}"' in page and f'data-testid="tokens-{key}"' in page
    finally:
        admin.close()
    for text in (member, browsers[MEMBER].get(f"{SVC}/static/werkhub.js").text):
        cleaned = text.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?://", cleaned)


def test_failed_endpoint_shows_reason_and_log_then_delete(
    werkhub: Werkhub, browsers: dict[str, httpx.Client], token: str, versions: dict[str, Any]
) -> None:
    ann = browsers[OWNER]
    with werkhub.client(token) as api:
        body = {"name": "broken", "model": MODEL, "version": versions["broken"]}
        assert api.post(f"{API}/endpoints", json=body).status_code == 201
        failed = wait_state(api, "broken", ("failed",))
    assert failed["reason"] and failed["log_tail"]
    page = ann.get(f"{SVC}/endpoints").text
    key = f"{OWNER}-broken"
    assert "failed" in find_testid(page, f"state-{key}")
    assert find_testid(page, f"reason-{key}") and find_testid(page, f"log-{key}")
    headers = {"X-Werkhub-Csrf": csrf(page)}
    for name in ("broken", "line"):
        reply = ann.delete(f"{API}/endpoints/{name}", params={"owner": OWNER}, headers=headers)
        assert reply.status_code == 204, reply.text
    assert 'data-testid="no-endpoints"' in ann.get(f"{SVC}/endpoints").text
    assert ann.get(f"{SVC}/endpoints/{OWNER}/line/live").status_code == 404
