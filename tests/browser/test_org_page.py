"""The organisation page in chromium: an organisation's admin sets a member's booking
policy, creates a group and makes the member an admin from the page's forms and buttons
(static/orgs.js, CSRF header), sees a refusal's message, and drops the policy again."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import BrowserHub, Shots

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
SLUG = "brorg"


@pytest.fixture
def organisation(browser_hub: BrowserHub) -> Iterator[str]:
    with browser_hub.hub.admin() as admin:
        assert (
            admin.post(f"{API}/orgs", json={"slug": SLUG, "name": "Browser GmbH"}).status_code
            == 201
        )
        for user, is_admin in (("alice", True), ("carol", False)):
            reply = admin.put(f"{API}/orgs/{SLUG}/members/{user}", json={"admin": is_admin})
            assert reply.status_code == 200, reply.text
    yield SLUG
    with browser_hub.hub.admin() as admin:  # the other browser tests see no organisation
        assert admin.delete(f"{API}/orgs/{SLUG}").status_code == 204


def test_an_organisation_admin_uses_the_page(
    browser_hub: BrowserHub, organisation: str, login: Callable[[str], Page], shots: Shots
) -> None:
    page = login("alice")
    page.goto(f"{browser_hub.url}/services/werkhub/")
    page.click('[data-testid="home-org"]')
    expect(page.locator("h1")).to_contain_text("Browser GmbH")
    shots(page, "org-page", narrow=True)
    form = page.locator('[data-testid="org-policy-form"]')
    form.locator("#pol-name").fill("carol")
    form.locator("#pol-max_concurrent_gpus").fill("99")
    form.locator("button[type=submit]").click()
    expect(page.locator("#message")).to_contain_text("this site has")
    form.locator("#pol-max_concurrent_gpus").fill("")
    form.locator("#pol-max_booking_hours").fill("2")
    form.locator("button[type=submit]").click()
    expect(page.locator('[data-testid="org-policies"]')).to_contain_text("Longest booking (h): 2")
    expect(page.locator("#message")).to_contain_text("Policy set.")
    page.fill("#grp-name", "line")
    page.click('[data-testid="org-add-group"]')
    expect(page.locator('[data-testid="org-groups"]')).to_contain_text(f"{SLUG}-line")
    row = page.locator('[data-testid="org-members"] tr', has_text="carol")
    row.get_by_role("button", name="Make admin").click()
    carol = page.locator('[data-testid="org-members"] tr', has_text="carol")
    expect(carol.locator("td").nth(1)).to_have_text("admin")
    shots(page, "after-changes")
    page.locator('[data-testid="org-policies"]').get_by_role("button", name="Drop").click()
    expect(page.locator('[data-testid="org-policies-none"]')).to_be_visible()
    with browser_hub.hub.admin() as admin:
        members = {m["user"]: m["admin"] for m in admin.get(f"{API}/orgs/{SLUG}/members").json()}
        assert members == {"alice": True, "carol": True}
        assert admin.get(f"{API}/orgs/{SLUG}/policies").json() == []


def test_a_platform_admin_manages_organisations(
    browser_hub: BrowserHub, chromium: Browser, shots: Shots
) -> None:
    assert browser_hub.hub.first_password
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    try:
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{browser_hub.url}/hub/login?next=/services/werkhub/orgs")
        page.fill("#username_input", "admin")
        page.fill("#password_input", browser_hub.hub.first_password)
        page.click("#login_submit")
        expect(page.locator("h1")).to_have_text("Organisations")
        page.fill("#new-slug", "brplat")
        page.fill("#new-name", "Platform Test AG")
        page.click('[data-testid="org-create"] button')
        card = page.locator('[data-testid="org-brplat"]')
        expect(card).to_contain_text("Platform Test AG")
        card.locator("#budget-brplat").fill("100")
        card.locator('[data-testid="org-budget-brplat"]').click()
        expect(page.locator('[data-testid="org-brplat"]')).to_contain_text(
            "100 GPU-hours per month"
        )
        card = page.locator('[data-testid="org-brplat"]')
        card.locator("input[name=H100]").fill("1")
        card.locator('[data-testid="org-guarantees-brplat"]').click()
        expect(page.locator('[data-testid="org-brplat"]')).to_contain_text("1 x H100")
        card = page.locator('[data-testid="org-brplat"]')
        card.locator("#adm-brplat").fill("bob")
        card.locator('[data-testid="org-admin-brplat"]').click()
        expect(page.locator('[data-testid="org-brplat"]')).to_contain_text("bob")
        shots(page, "platform-orgs")
        page.locator('[data-testid="org-remove-brplat"]').click()
        expect(page.locator('[data-testid="org-brplat"]')).to_have_count(0)
    finally:
        context.close()
    with browser_hub.hub.admin() as admin:
        assert admin.get(f"{API}/orgs/brplat").status_code == 404
