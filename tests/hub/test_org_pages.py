"""Pages of organisations on a real hub: platform admins manage every organisation on
``/orgs``, an organisation's admins manage their people on ``/orgs/{slug}`` (and see only
theirs), anyone else gets 404; changes from the pages go to the API with the CSRF token,
and the home and admin pages link to them for those who may use them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.hub.test_pages import csrf, new_user
from tests.support.hub import Werkhub

pytestmark = pytest.mark.hub
SVC = "/services/werkhub"
API = f"{SVC}/api"
ACME, BETA = "opgacme", "opgbeta"


@pytest.fixture(scope="module")
def browsers(werkhub: Werkhub) -> Iterator[dict[str, httpx.Client]]:
    made = {name: new_user(werkhub, name) for name in ("opg-ann", "opg-al", "opg-bob", "opg-zed")}
    with werkhub.admin() as admin:
        for slug in (ACME, BETA):
            reply = admin.post(f"{API}/orgs", json={"slug": slug, "name": f"{slug} GmbH"})
            assert reply.status_code == 201, reply.text
        for slug, user, is_admin in (
            (ACME, "opg-ann", True),
            (ACME, "opg-al", False),
            (BETA, "opg-bob", True),
        ):
            reply = admin.put(f"{API}/orgs/{slug}/members/{user}", json={"admin": is_admin})
            assert reply.status_code == 200, reply.text
    yield made
    for browser in made.values():
        browser.close()


def test_platform_admins_see_every_organisation(
    werkhub: Werkhub, browsers: dict[str, httpx.Client]
) -> None:
    with werkhub.admin() as admin:
        page = admin.get(f"{SVC}/orgs")
        assert page.status_code == 200, page.text
        for slug in (ACME, BETA):
            assert f'data-testid="org-{slug}"' in page.text
            assert f'data-path="/orgs/{slug}/guarantees"' in page.text
        assert 'data-testid="org-create"' in page.text
        assert "opg-ann" in page.text  # ACME's admin is named
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        beta = admin.get(f"{SVC}/orgs/{BETA}")
        assert beta.status_code == 200 and "opg-bob" in beta.text
        assert f'href="{SVC}/orgs"' in admin.get(f"{SVC}/").text
        assert f'href="{SVC}/orgs"' in admin.get(f"{SVC}/admin").text


def test_organisation_admins_see_only_theirs(
    werkhub: Werkhub, browsers: dict[str, httpx.Client]
) -> None:
    ann = browsers["opg-ann"]
    listing = ann.get(f"{SVC}/orgs")
    assert listing.status_code == 200
    assert f'data-testid="org-{ACME}"' in listing.text and BETA not in listing.text
    assert 'data-testid="org-create"' not in listing.text
    page = ann.get(f"{SVC}/orgs/{ACME}")
    assert page.status_code == 200, page.text
    for part in (
        'data-testid="org-members"',
        'data-testid="org-policy-form"',
        'data-testid="org-signups-none"',
        f'href="{SVC}/orgs/{ACME}/statement"',
        f'data-path="/orgs/{ACME}/invitations"',
        f'data-org-call="DELETE /orgs/{ACME}/members/opg-al"',
    ):
        assert part in page.text, part
    assert f'href="{SVC}/orgs/{ACME}"' in ann.get(f"{SVC}/").text
    assert ann.get(f"{SVC}/orgs/{BETA}").status_code == 404
    assert browsers["opg-bob"].get(f"{SVC}/orgs/{ACME}").status_code == 404
    for who in ("opg-al", "opg-zed"):  # a member, and someone outside every organisation
        for path in ("/orgs", f"/orgs/{ACME}", f"/orgs/{BETA}", "/orgs/opgnosuch"):
            reply = browsers[who].get(f"{SVC}{path}")
            assert reply.status_code == 404, (who, path)
            assert "opg-ann" not in reply.text
        assert 'data-testid="home-org' not in browsers[who].get(f"{SVC}/").text


def test_changes_from_the_page_carry_the_csrf_token(
    werkhub: Werkhub, browsers: dict[str, httpx.Client]
) -> None:
    ann = browsers["opg-ann"]
    token = csrf(ann.get(f"{SVC}/orgs/{ACME}").text)
    url = f"{API}/orgs/{ACME}/policies/users/opg-al"
    refused = ann.put(url, json={"max_booking_hours": 3})
    assert refused.status_code == 403 and "X-Werkhub-Csrf" in refused.json()["detail"]
    done = ann.put(url, json={"max_booking_hours": 3}, headers={"X-Werkhub-Csrf": token})
    assert done.status_code == 200, done.text
    page = ann.get(f"{SVC}/orgs/{ACME}").text
    assert 'data-testid="org-policies"' in page and "Longest booking (h): 3" in page
    made = ann.post(
        f"{API}/orgs/{ACME}/groups", json={"name": "line"}, headers={"X-Werkhub-Csrf": token}
    )
    assert made.status_code == 201, made.text
    page = ann.get(f"{SVC}/orgs/{ACME}").text
    assert f"<code>{ACME}-line</code>" in page and '<option value="line">' in page
    with werkhub.admin() as admin:
        admin.delete(f"{API}/orgs/{ACME}/policies/users/opg-al")
