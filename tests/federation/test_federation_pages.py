"""Pages of federations on a real werkhub: the list and the federation page as their
owner, an invited organisation's admin and member, a party's admin and others see them
(others: 404, also for the run's live part and the flwr files); changes from the pages go
to the API with the CSRF token (create, invite, decline, revoke, accept, leave); a run's
rounds (written by the service's own store, as its supervisor does) appear as a table, a
chart and links to MLflow, and its live part stops being fetched once the run ended."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.federation.world import API, World, make_world, ok
from tests.hub.test_pages import csrf, new_user
from tests.support.hub import Werkhub, running_werkhub
from werkhub.db import make_engines
from werkhub.federation.rules import Round
from werkhub.federation.store import FederationStore

SVC = "/services/werkhub"
APP = {"template": "federated-quality-inspection"}
#: browser users (cookie sessions, so the CSRF path is what the pages use): org -> user
OWNER, INVITEE = "fp-ann", "fp-bob"


@dataclass
class Pages:
    world: World
    browsers: dict[str, httpx.Client]
    fid: int

    def send(self, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
        """What orgs.js / federations.js send: JSON with the page's CSRF token."""
        browser = self.browsers[who]
        token = csrf(browser.get(f"{SVC}/").text)
        return browser.request(method, f"{API}{path}", json=body, headers={"X-Werkhub-Csrf": token})


def store(hub: Werkhub) -> FederationStore:
    writer, reader = make_engines(f"sqlite:///{hub.state / 'werkhub.sqlite'}")
    return FederationStore(writer, reader)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    with running_werkhub(tmp_path_factory.mktemp("fedpages")) as hub:
        world = make_world(hub)
        browsers = {name: new_user(hub, name) for name in (OWNER, INVITEE)}
        with hub.admin() as admin:  # ann: an admin of fedacme, bob: of fedbeta
            for slug, name in (("fedacme", OWNER), ("fedbeta", INVITEE)):
                ok(admin.put(f"{API}/orgs/{slug}/members/{name}", json={"admin": True}))
        page = Pages(world, browsers, 0)
        made = page.send(
            OWNER,
            "POST",
            "/federations",
            {"name": "quality", "app": APP, "rounds": 4, "invite": ["fedbeta", "fedgamma"]},
        )
        assert made.status_code == 201, made.text
        page.fid = made.json()["id"]
        yield page
        for browser in browsers.values():
            browser.close()


def test_the_owner_sees_the_forms_of_an_owner(pages: Pages) -> None:
    ann, fid = pages.browsers[OWNER], pages.fid
    listing = ann.get(f"{SVC}/federations")
    assert listing.status_code == 200, listing.text
    assert f'data-testid="fed-{fid}"' in listing.text and 'data-testid="fed-create"' in listing.text
    assert 'data-testid="feds-owned"' in listing.text and "1 invited" not in listing.text
    assert "2 invited" in listing.text and "<option>federated-quality-inspection</option>" in (
        listing.text
    )
    page = ann.get(f"{SVC}/federations/{fid}")
    assert page.status_code == 200, page.text
    for part in (
        'data-testid="party-fedbeta"',
        'data-testid="party-fedgamma"',
        f'data-org-call="POST /federations/{fid}/revoke" data-body=\'{{"org": "fedbeta"}}\'',
        f'data-path="/federations/{fid}/invitations"',
        f'data-fed-run="/federations/{fid}/runs"',
        f'href="{SVC}/federations/{fid}/flwr/config.toml"',
        'data-testid="fed-runs-none"',
        f'src="{SVC}/static/federations.js"',
    ):
        assert part in page.text, part
    assert 'data-testid="fed-accept"' not in page.text and "fed-leave" not in page.text
    cleaned = page.text.replace("http://www.w3.org/2000/svg", "")
    assert not re.search(r"https?://", cleaned) and "cdn" not in cleaned.lower()
    assert f'href="{SVC}/federations"' in ann.get(f"{SVC}/").text
    with pages.world.hub.admin() as admin:
        assert f'href="{SVC}/federations"' in admin.get(f"{SVC}/admin").text
        everything = admin.get(f"{SVC}/federations")  # a platform admin: every federation
        assert everything.status_code == 200 and f'data-testid="fed-{fid}"' in everything.text
    for name in ("federations.js", "orgs.js", "werkhub.js"):
        script = ann.get(f"{SVC}/static/{name}")
        assert script.status_code == 200 and not re.search(r"https?://", script.text)


def test_who_sees_what(pages: Pages) -> None:
    world, fid = pages.world, pages.fid
    base = f"{SVC}/federations/{fid}"
    # another organisation's admin, and someone in no organisation: nothing, 404
    for who in ("fd-dan", "fx-lone"):
        with world.client(who) as other:
            for path in (base, f"{base}/runs/1/live", f"{base}/flwr/config.toml"):
                reply = other.get(path)
                assert reply.status_code == 404, (who, path, reply.status_code)
                assert "quality" not in reply.text and "fedacme" not in reply.text
            listing = other.get(f"{SVC}/federations")
            if who == "fx-lone":
                assert listing.status_code == 404
            else:
                assert listing.status_code == 200 and f'data-testid="fed-{fid}"' not in listing.text
            home = other.get(f"{SVC}/").text  # the home page links it for organisation members
            assert ('data-testid="home-federations"' in home) == (who == "fd-dan")
    # the owner organisation's member (not its creator): sees it, may not run it
    with world.client("fa-al") as al:
        page = al.get(base).text
        assert 'data-testid="party-fedbeta"' in page
        assert "fed-start" not in page and "fed-invite" not in page and "revoke-" not in page
        assert al.get(f"{base}/flwr/ca.pem").status_code == 404  # the API: owners only
    # an invited organisation's member sees the invitation, without the forms of its admin
    with world.client("fb-bea") as bea:
        listing = bea.get(f"{SVC}/federations").text
        assert 'data-testid="feds-invited"' in listing and "only an admin" in listing
        assert f'data-testid="fed-accept-{fid}"' not in listing
        assert 'data-testid="fed-accept"' not in bea.get(base).text
    # its admin may accept or decline, on both pages
    with world.client("fb-bob") as bob:
        assert f'data-testid="fed-accept-{fid}"' in bob.get(f"{SVC}/federations").text
        page = bob.get(base).text
        assert f'data-path="/federations/{fid}/accept"' in page and "fed-decline" in page
        assert "fed-start" not in page and "flwr/config.toml" not in page


def test_changes_from_the_pages_carry_the_csrf_token(pages: Pages) -> None:
    ann, fid = pages.browsers[OWNER], pages.fid
    url = f"{API}/federations/{fid}/invitations"
    refused = ann.post(url, json={"org": "feddelta"})
    assert refused.status_code == 403 and "X-Werkhub-Csrf" in refused.json()["detail"]
    assert ok(pages.send(OWNER, "POST", f"/federations/{fid}/invitations", {"org": "feddelta"}))
    assert 'data-testid="party-feddelta"' in ann.get(f"{SVC}/federations/{fid}").text
    # fedbeta's admin (bob, a browser) declines; ann invites it again, then revokes it
    assert ok(pages.send(INVITEE, "POST", f"/federations/{fid}/decline"))
    row = re.search(
        r'data-testid="party-fedbeta">.*?</tr>', ann.get(f"{SVC}/federations/{fid}").text, re.S
    )
    assert row and "state-declined" in row.group(0) and "revoke-fedbeta" not in row.group(0)
    ok(pages.send(OWNER, "POST", f"/federations/{fid}/invitations", {"org": "fedbeta"}))
    ok(pages.send(OWNER, "POST", f"/federations/{fid}/revoke", {"org": "feddelta"}))
    page = ann.get(f"{SVC}/federations/{fid}").text
    delta = re.search(r'data-testid="party-feddelta">.*?</tr>', page, re.S)
    assert delta and "state-revoked" in delta.group(0)
    # a refusal is a sentence for the page's message area
    bad = pages.send(OWNER, "POST", "/federations", {"name": "Bad Name", "app": APP})
    assert bad.status_code == 422 and "name" in bad.text


def test_accept_and_leave_from_the_page(pages: Pages) -> None:
    """fedbeta's admin accepts with a folder of their home (the party's SuperNode key is
    registered with the federation's SuperLink), sees the Leave button, and leaves."""
    world, fid = pages.world, pages.fid
    bob = pages.browsers[INVITEE]
    folder = world.data_folder(INVITEE)
    missing = pages.send(INVITEE, "POST", f"/federations/{fid}/accept", {"data_folder": "nope"})
    assert missing.status_code in (404, 409, 422), missing.text
    accepted = pages.send(
        INVITEE, "POST", f"/federations/{fid}/accept", {"data_folder": folder, "gpus": 0}
    )
    assert accepted.status_code == 200, accepted.text
    page = bob.get(f"{SVC}/federations/{fid}").text
    row = re.search(r'data-testid="party-fedbeta">.*?</tr>', page, re.S)
    assert row and "state-accepted" in row.group(0) and INVITEE in row.group(0)
    assert 'data-testid="fed-leave"' in page
    owner_view = pages.browsers[OWNER].get(f"{SVC}/federations/{fid}").text
    assert INVITEE not in owner_view  # another organisation's party user is not shown
    # the owner's flwr files: the SuperLink's connection and the CA it is signed by
    config = pages.browsers[OWNER].get(f"{SVC}/federations/{fid}/flwr/config.toml")
    assert config.status_code == 200, config.text
    assert config.headers["content-disposition"] == 'attachment; filename="config.toml"'
    assert 'address = "127.0.0.1:' in config.text
    # by its absolute path in ~/.flwr of the owner's own server (Flower takes no other)
    home = pages.world.hub.state / "homes" / OWNER
    assert f'root-certificates = "{home}/.flwr/ca.pem"' in config.text
    ca = pages.browsers[OWNER].get(f"{SVC}/federations/{fid}/flwr/ca.pem")
    assert ca.status_code == 200 and ca.text.startswith("-----BEGIN CERTIFICATE-----")
    assert bob.get(f"{SVC}/federations/{fid}/flwr/ca.pem").status_code == 404  # a party
    assert ok(pages.send(INVITEE, "POST", f"/federations/{fid}/leave"))
    page = bob.get(f"{SVC}/federations/{fid}").text
    assert "fed-leave" not in page and "state-left" in page


def test_a_run_with_rounds(pages: Pages) -> None:
    """A finished run and a running one, as the supervisor records them (the store)."""
    hub = pages.world.hub
    made = ok(
        pages.send(
            OWNER,
            "POST",
            "/federations",
            {"name": "rounds", "app": APP, "rounds": 3, "invite": ["fedgamma", "feddelta"]},
        )
    )
    fid = made["id"]
    found = store(hub)
    try:
        for slug, user in (("fedgamma", "fg-gil"), ("feddelta", "fd-dan")):
            found.move_party(fid, slug, "accept", user, {"user": user, "data_folder": "d"})
        row = {
            "rounds": 3,
            "secure_aggregation": False,
            "parties": ["fedgamma", "feddelta"],
            "started_by": OWNER,
        }
        done = found.start_run(fid, row, 2)
        for n, loss, f1 in ((1, 0.9, 0.41), (2, 0.55, 0.72), (3, 0.31, 0.88)):
            found.add_round(done["id"], Round(n, 2, loss, {"macro_f1": f1}, 10, 20, 1.0))
        found.update_run(
            done["id"],
            {
                "status": "finished",
                "flower_run_id": 4242,
                "message": "3 rounds with 2 parties; macro_f1 0.88",
                "mlflow": {"experiment_id": "5", "run_id": "r5"},
                "model": {"name": f"{OWNER}~federation-rounds", "version": "1"},
            },
        )
        going = found.start_run(fid, {**row, "rounds": 2}, 2)
        found.update_run(going["id"], {"status": "running", "flower_run_id": 4243})
        found.add_round(going["id"], Round(1, 2, 0.8, {"macro_f1": 0.5}, 10, 20, 1.0))
    finally:
        found.writer.dispose()
        found.reader.dispose()
    ann = pages.browsers[OWNER]
    page = ann.get(f"{SVC}/federations/{fid}").text
    finished = page[page.index(f'data-testid="run-{done["id"]}"') :]
    for part in (
        'data-testid="run-rounds"',
        "<td>0.31</td>",
        "<td>0.88</td>",
        "3 of 3",
        "3 rounds with 2 parties; macro_f1 0.88",
        'href="/services/mlflow/#/experiments/5/runs/r5"',
        f"{OWNER}~federation-rounds version 1",
        "<svg",
    ):
        assert part in finished, part
    live = f"{SVC}/federations/{fid}/runs/{going['id']}/live"
    assert f'data-live="{live}"' in page  # the running one is fetched again
    assert f'/runs/{done["id"]}/live"' not in page  # the finished one is not
    part = ann.get(live)
    assert part.status_code == 200 and "<td>0.8</td>" in part.text
    assert "data-live-done" not in part.text and 'data-testid="run-stop"' in part.text
    with pages.world.client("fb-bea") as bea:  # fedbeta left this one out: 404
        assert bea.get(live).status_code == 404
    with pages.world.client("fg-gus") as gus:  # a party's member: sees it, may not stop it
        seen = gus.get(live)
        assert seen.status_code == 200 and "run-stop" not in seen.text
