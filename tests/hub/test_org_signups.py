"""Sign-ups into an organisation on a real hub with native login: a person asks to join
one by its short name, stays unable to log in until that organisation's admins (or a
platform admin) approve them, and becomes a member then; a refusal removes the request.
Another organisation's admins answer 404."""

from __future__ import annotations

import pytest

from tests.security.test_accounts import Browser
from tests.support.hub import Werkhub

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
ACME, BETA = "osacme", "osbeta"


@pytest.fixture(scope="module")
def admins(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in ("os-ann", "os-al", "os-bob")}
    with werkhub.admin() as admin:
        for slug in (ACME, BETA):
            assert admin.post(f"{API}/orgs", json={"slug": slug, "name": slug}).status_code == 201
        for slug, user, is_admin in (
            (ACME, "os-ann", True),
            (ACME, "os-al", False),
            (BETA, "os-bob", True),
        ):
            reply = admin.put(f"{API}/orgs/{slug}/members/{user}", json={"admin": is_admin})
            assert reply.status_code == 200, reply.text
    return tokens


def ask(werkhub: Werkhub, name: str, org: str) -> tuple[int, str]:
    with Browser(werkhub) as person:
        page = person.http.get(f"/hub/signup?org={org}")
        assert 'name="organisation"' in page.text and f'value="{org}"' in page.text
        data = {
            "username": name,
            "password": "a-long-password",
            "password_repeat": "a-long-password",
            "organisation": org,
        }
        reply = person.post("/hub/signup", data, form="/hub/signup")
        return reply.status_code, reply.text


def can_log_in(werkhub: Werkhub, name: str) -> bool:
    with Browser(werkhub) as person:
        return person.login(name, "a-long-password") == name


def test_a_sign_up_names_an_organisation_whose_admins_approve_it(
    werkhub: Werkhub, admins: dict[str, str]
) -> None:
    status, text = ask(werkhub, "os-new", ACME)
    assert status == 200 and f"An administrator of &#39;{ACME}&#39;" in text, text[-800:]
    status, text = ask(werkhub, "os-lost", "osnosuch")
    assert status == 400 and "no organisation" in text
    assert not can_log_in(werkhub, "os-new")
    assert werkhub.first_password
    with Browser(werkhub) as admin:  # the hub's own approval page sends them to the org's
        assert admin.login("admin", werkhub.first_password) == "admin"
        page = "/hub/werkhub/signups"
        sent = admin.post(page, {"name": "os-new", "action": "approve"}, form=page)
        assert sent.status_code == 400 and f"/services/werkhub/orgs/{ACME}" in sent.text
    with werkhub.client(admins["os-bob"]) as bob:  # the other organisation's admin
        assert bob.get(f"{API}/orgs/{ACME}/signups").status_code == 404
        assert bob.get(f"{API}/orgs/{BETA}/signups").json() == []
        for action in ("approve", "refuse"):
            for slug in (ACME, BETA):
                reply = bob.post(f"{API}/orgs/{slug}/signups/os-new/{action}")
                assert reply.status_code == 404, (slug, action, reply.text)
    with werkhub.client(admins["os-al"]) as al:  # a member is no admin
        assert al.get(f"{API}/orgs/{ACME}/signups").status_code == 403
        assert al.post(f"{API}/orgs/{ACME}/signups/os-new/approve").status_code == 403
    assert not can_log_in(werkhub, "os-new")
    with werkhub.client(admins["os-ann"]) as ann:
        assert [s["name"] for s in ann.get(f"{API}/orgs/{ACME}/signups").json()] == ["os-new"]
        done = ann.post(f"{API}/orgs/{ACME}/signups/os-new/approve")
        assert done.status_code == 200, done.text
        assert ann.get(f"{API}/orgs/{ACME}/signups").json() == []
        again = ann.post(f"{API}/orgs/{ACME}/signups/os-new/approve")
        assert again.status_code == 404
        members = {m["user"] for m in ann.get(f"{API}/orgs/{ACME}/members").json()}
        assert "os-new" in members
    assert can_log_in(werkhub, "os-new")
    with werkhub.admin() as admin:
        group = admin.get(f"/hub/api/groups/org-{ACME}").json()["users"]
        assert "os-new" in group


def test_a_refused_sign_up_is_removed(werkhub: Werkhub, admins: dict[str, str]) -> None:
    assert ask(werkhub, "os-no", ACME)[0] == 200
    with werkhub.admin() as admin:  # platform admins see every organisation's requests
        listed = admin.get(f"{API}/orgs/{ACME}/signups").json()
        assert [s["name"] for s in listed] == ["os-no"]
    with werkhub.client(admins["os-ann"]) as ann:
        assert ann.post(f"{API}/orgs/{ACME}/signups/os-no/refuse").status_code == 204
        assert ann.get(f"{API}/orgs/{ACME}/signups").json() == []
        members = {m["user"] for m in ann.get(f"{API}/orgs/{ACME}/members").json()}
        assert "os-no" not in members
    assert not can_log_in(werkhub, "os-no")
    # the name is free again
    assert ask(werkhub, "os-no", BETA)[0] == 200
    with werkhub.client(admins["os-bob"]) as bob:
        assert [s["name"] for s in bob.get(f"{API}/orgs/{BETA}/signups").json()] == ["os-no"]
        assert bob.post(f"{API}/orgs/{BETA}/signups/os-no/refuse").status_code == 204


def test_the_command_line_lists_and_approves(werkhub: Werkhub, admins: dict[str, str]) -> None:
    where = ("--state", str(werkhub.state), "--config", str(werkhub.config))
    assert ask(werkhub, "os-cli", BETA)[0] == 200
    listed = werkhub.cli("orgs", "signups", BETA, *where)
    assert listed.returncode == 0 and listed.stdout.split() == ["os-cli"], listed.stderr
    wrong = werkhub.cli("orgs", "approve", ACME, "os-cli", *where)  # asked for BETA
    assert wrong.returncode == 1 and "404" in wrong.stderr
    done = werkhub.cli("orgs", "approve", BETA, "os-cli", *where)
    assert done.returncode == 0, done.stderr
    assert can_log_in(werkhub, "os-cli")
