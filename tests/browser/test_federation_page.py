"""The federation pages in chromium: an organisation's admin creates a federation from the
list page's form (static/federations.js: the app, secure aggregation and invitations as
the API wants them), an invited organisation's admin declines on their list page, the
owner invites again, revokes and invites again from the federation page (static/orgs.js),
and a running run's rounds appear on the open page as the service records them (the live
part, fetched again until the run ended); a refused start is a message."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import BrowserHub, Shots
from werkhub.db import make_engines
from werkhub.federation.rules import Round
from werkhub.federation.store import FederationStore

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
ORGS = {"brfa": "alice", "brfb": "bob", "brfc": "carol"}  # organisation -> its admin


@pytest.fixture
def store(browser_hub: BrowserHub) -> Iterator[FederationStore]:
    writer, reader = make_engines(f"sqlite:///{browser_hub.hub.state / 'werkhub.sqlite'}")
    yield FederationStore(writer, reader)
    writer.dispose()
    reader.dispose()


@pytest.fixture
def organisations(browser_hub: BrowserHub, store: FederationStore) -> Iterator[None]:
    with browser_hub.hub.admin() as admin:
        for slug, user in ORGS.items():
            made = admin.post(f"{API}/orgs", json={"slug": slug, "name": f"{slug} AG"})
            assert made.status_code == 201, made.text
            reply = admin.put(f"{API}/orgs/{slug}/members/{user}", json={"admin": True})
            assert reply.status_code == 200, reply.text
    yield
    for fed in store.listing(None, everything=True):  # the other browser tests see none
        if fed["owner_org"] in ORGS:
            store.remove(fed["id"])
    with browser_hub.hub.admin() as admin:
        for slug in ORGS:
            assert admin.delete(f"{API}/orgs/{slug}").status_code == 204


def confirming(page: Page) -> Page:
    page.on("dialog", lambda dialog: dialog.accept())
    return page


def party(page: Page, slug: str) -> Locator:
    return page.locator(f'[data-testid="party-{slug}"]')


def test_create_invite_decline_revoke_and_watch_rounds(
    browser_hub: BrowserHub,
    organisations: None,
    store: FederationStore,
    login: Callable[[str], Page],
    shots: Shots,
) -> None:
    alice = confirming(login("alice"))
    alice.goto(f"{browser_hub.url}/services/werkhub/")
    alice.click('[data-testid="home-federations"]')
    expect(alice.locator("h1")).to_have_text("Federations")
    form = alice.locator('[data-testid="fed-create"]')
    form.locator("#fed-name").fill("inspection")
    form.locator("#fed-rounds").fill("3")
    form.locator("#fed-secagg").select_option("off")
    form.locator("#fed-invite").fill("brfb, brfc")
    form.locator("#fed-config").fill("{not json")
    form.locator("button[type=submit]").click()
    expect(alice.locator("#message")).to_contain_text("not JSON")
    form.locator("#fed-config").fill("")
    shots(alice, "create-form", narrow=True)
    form.locator("button[type=submit]").click()
    expect(alice.locator("h1")).to_contain_text("inspection")
    expect(alice.locator("#message")).to_contain_text("Federation inspection created.")
    fid = int(alice.url.rstrip("/").rsplit("/", 1)[1])
    expect(alice.locator('[data-testid="fed-secagg"]')).to_have_text("off")
    expect(party(alice, "brfb")).to_contain_text("invited")
    expect(party(alice, "brfc")).to_contain_text("invited")

    bob = confirming(login("bob"))
    bob.goto(f"{browser_hub.url}/services/werkhub/federations")
    expect(bob.locator('[data-testid="feds-invited"]')).to_contain_text("inspection")
    expect(bob.locator(f'[data-testid="fed-accept-{fid}"]')).to_be_visible()
    shots(bob, "invited")
    bob.click(f'[data-testid="fed-decline-{fid}"]')
    expect(bob.locator("#message")).to_contain_text("declined")
    expect(bob.locator(f'[data-testid="fed-accept-{fid}"]')).to_have_count(0)

    alice.reload()
    expect(party(alice, "brfb")).to_contain_text("declined")
    alice.fill("#inv-org", "brfb")
    alice.locator('[data-testid="fed-invite"] button').click()
    expect(alice.locator("#message")).to_contain_text("Invitation sent.")
    expect(party(alice, "brfb")).to_contain_text("invited")
    alice.click('[data-testid="revoke-brfb"]')
    expect(party(alice, "brfb")).to_contain_text("revoked")
    alice.fill("#inv-org", "brfb")
    alice.locator('[data-testid="fed-invite"] button').click()
    expect(party(alice, "brfb")).to_contain_text("invited")

    # both accept (recorded as the API does, without starting their nodes) and a run goes
    for slug in ("brfb", "brfc"):
        store.move_party(fid, slug, "accept", ORGS[slug], {"user": ORGS[slug], "data_folder": "d"})
    row = {"rounds": 3, "secure_aggregation": False, "parties": ["brfb", "brfc"]}
    run = store.start_run(fid, {**row, "started_by": "alice"}, 2)
    store.update_run(run["id"], {"status": "running", "flower_run_id": 9})
    store.add_round(run["id"], Round(1, 2, 0.83, {"macro_f1": 0.52}, 1, 1, 1.0))
    alice.reload()
    box = alice.locator(f'[data-testid="run-{run["id"]}"]')
    expect(box.locator('[data-testid="run-status"]')).to_have_text("running")
    expect(box.locator('[data-testid="run-rounds"] tbody tr')).to_have_count(1)
    store.add_round(run["id"], Round(2, 2, 0.47, {"macro_f1": 0.79}, 1, 1, 1.0))
    expect(box.locator('[data-testid="run-rounds"] tbody tr')).to_have_count(2, timeout=20_000)
    expect(box.locator('[data-testid="run-rounds"]')).to_contain_text("0.79")
    expect(box.locator('[data-testid="run-chart"] svg polyline')).to_have_count(2)
    # a second run while this one goes: refused, with the reason in the message area
    alice.locator('[data-testid="fed-start"] button').click()
    expect(alice.locator("#message")).to_have_class(re.compile("error"))
    expect(alice.locator("#message")).not_to_be_empty()
    store.add_round(run["id"], Round(3, 2, 0.31, {"macro_f1": 0.9}, 1, 1, 1.0))
    store.update_run(run["id"], {"status": "finished", "message": "finished 3 round(s)"})
    expect(box.locator('[data-testid="run-status"]')).to_have_text("finished", timeout=20_000)
    expect(box.locator('[data-testid="run-message"]')).to_contain_text("finished 3 round(s)")
    expect(box.locator('[data-testid="run-stop"]')).to_have_count(0)
    shots(alice, "finished-run", narrow=True)
    # finished: the live part is not fetched again (it would replace the marked element)
    box.locator('[data-testid="run-status"]').evaluate("el => el.setAttribute('data-seen', '1')")
    alice.wait_for_timeout(4000)
    expect(box.locator('[data-testid="run-status"][data-seen="1"]')).to_have_count(1)
