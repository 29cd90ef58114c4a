"""Organisations on a real hub: platform admins create them, organisation admins manage
their own people only (another organisation answers 404, also to its admins), the hub's
groups mirror every membership, and shares stay inside an organisation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.hub import Werkhub

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
ACME, BETA = "ogacme", "ogbeta"
PEOPLE = ("og-ann", "og-al", "og-bob", "og-bea", "og-zed")


@pytest.fixture(scope="module")
def people(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in PEOPLE}
    with werkhub.admin() as admin:
        for slug, name in ((ACME, "ACME Maschinenbau"), (BETA, "Beta Zulieferer")):
            reply = admin.post(f"{API}/orgs", json={"slug": slug, "name": name})
            assert reply.status_code == 201, reply.text
        for slug, user in ((ACME, "og-ann"), (BETA, "og-bob")):
            reply = admin.put(f"{API}/orgs/{slug}/members/{user}", json={"admin": True})
            assert reply.status_code == 200, reply.text
    return tokens


def hub_group(werkhub: Werkhub, group: str) -> list[str] | None:
    with werkhub.admin() as admin:
        reply = admin.get(f"/hub/api/groups/{group}")
    return None if reply.status_code == 404 else sorted(reply.json()["users"])


def test_platform_admins_create_and_refusals_are_clear(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    with werkhub.admin() as admin:
        assert admin.post(f"{API}/orgs", json={"slug": ACME, "name": "again"}).status_code == 409
        bad = admin.post(f"{API}/orgs", json={"slug": "Not A Slug", "name": "x"})
        assert bad.status_code == 422 and bad.json()["detail"]
        renamed = admin.patch(f"{API}/orgs/{ACME}", json={"name": "ACME Maschinenbau GmbH"})
        assert renamed.status_code == 200 and renamed.json()["name"].endswith("GmbH")
    with werkhub.client(people["og-ann"]) as ann:
        reply = ann.post(f"{API}/orgs", json={"slug": "ogother", "name": "x"})
        assert reply.status_code == 403
        assert ann.patch(f"{API}/orgs/{ACME}", json={"name": "mine"}).status_code == 403


def test_organisation_admins_manage_their_own_people_only(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    with werkhub.client(people["og-bob"]) as bob:
        assert bob.put(f"{API}/orgs/{BETA}/members/og-bea", json={}).status_code == 200
    with werkhub.client(people["og-ann"]) as ann:
        assert ann.put(f"{API}/orgs/{ACME}/members/og-al", json={}).status_code == 200
        # a user belongs to at most one organisation; to an organisation admin, the other
        # organisation's people do not exist
        taken = ann.put(f"{API}/orgs/{ACME}/members/og-bea", json={})
        assert taken.status_code == 404 and "og-bea" in taken.json()["detail"]
    with werkhub.admin() as admin:  # a platform admin learns why
        taken = admin.put(f"{API}/orgs/{ACME}/members/og-bea", json={})
        assert taken.status_code == 409 and "another organisation" in taken.json()["detail"]
    with werkhub.client(people["og-ann"]) as ann:
        missing = ann.put(f"{API}/orgs/{ACME}/members/og-nobody", json={})
        assert missing.status_code == 404
        # the other organisation does not exist for an admin of this one
        for method, path, body in (
            ("GET", f"/orgs/{BETA}", None),
            ("GET", f"/orgs/{BETA}/members", None),
            ("GET", f"/orgs/{BETA}/groups", None),
            ("PUT", f"/orgs/{BETA}/members/og-ann", {}),
            ("DELETE", f"/orgs/{BETA}/members/og-bea", None),
            ("POST", f"/orgs/{BETA}/groups", {"name": "qa"}),
            ("PUT", f"/orgs/{BETA}/groups/qa/members/og-bea", None),
        ):
            reply = ann.request(method, f"{API}{path}", json=body)
            assert reply.status_code == 404, (method, path, reply.text)
        assert [o["slug"] for o in ann.get(f"{API}/orgs").json()] == [ACME]
        members = {m["user"]: m["admin"] for m in ann.get(f"{API}/orgs/{ACME}/members").json()}
        assert members == {"og-ann": True, "og-al": False}
    with werkhub.client(people["og-al"]) as al:
        # a member sees the organisation, but does not manage it
        assert al.get(f"{API}/orgs/{ACME}").status_code == 200
        assert al.get(f"{API}/orgs/{ACME}/members").status_code == 403
        assert al.put(f"{API}/orgs/{ACME}/members/og-zed", json={}).status_code == 403
    with werkhub.client(people["og-zed"]) as zed:
        assert zed.get(f"{API}/orgs").json() == []
        assert zed.get(f"{API}/orgs/{ACME}").status_code == 404
    # the hub's groups mirror the memberships (for group-filtered hub scopes)
    assert hub_group(werkhub, f"org-{ACME}") == ["og-al", "og-ann"]
    assert hub_group(werkhub, f"org-{ACME}-admins") == ["og-ann"]
    assert hub_group(werkhub, f"org-{BETA}") == ["og-bea", "og-bob"]


def test_groups_inside_and_shares_stay_inside(werkhub: Werkhub, people: dict[str, str]) -> None:
    with werkhub.client(people["og-ann"]) as ann:
        reply = ann.post(f"{API}/orgs/{ACME}/groups", json={"name": "qa"})
        assert reply.status_code == 201, reply.text
        assert f"{ACME}-qa" in reply.json()
        assert ann.put(f"{API}/orgs/{ACME}/groups/qa/members/og-al").status_code == 204
        # only members of the organisation go into its groups
        assert ann.put(f"{API}/orgs/{ACME}/groups/qa/members/og-bea").status_code == 404
        # and out again (another organisation's member or group: 404)
        assert ann.delete(f"{API}/orgs/{ACME}/groups/qa/members/og-al").status_code == 204
        assert hub_group(werkhub, f"{ACME}-qa") == []
        assert ann.delete(f"{API}/orgs/{ACME}/groups/qa/members/og-bea").status_code == 404
        assert ann.delete(f"{API}/orgs/{BETA}/groups/qa/members/og-bea").status_code == 404
        assert ann.put(f"{API}/orgs/{ACME}/groups/qa/members/og-al").status_code == 204
    assert hub_group(werkhub, f"{ACME}-qa") == ["og-al"]

    def experiment(token: str, name: str) -> str:
        with werkhub.client(token) as client:
            reply = client.post(
                "/services/mlflow/api/2.0/mlflow/experiments/create", json={"name": name}
            )
            assert reply.status_code == 200, reply.text
            return str(reply.json()["experiment_id"])

    def share(token: str, experiment_id: str, group: str) -> Any:
        with werkhub.client(token) as client:
            return client.post(
                f"{API}/experiments/{experiment_id}/share",
                json={"group": group, "permission": "READ"},
            )

    mine = experiment(people["og-al"], "og-al/press-line")
    assert share(people["og-al"], mine, f"{ACME}-qa").status_code == 200
    across = share(people["og-al"], mine, f"org-{BETA}")
    assert across.status_code == 422 and "across organisations" in across.json()["detail"]
    outsider = experiment(people["og-zed"], "og-zed/bench")
    refused = share(people["og-zed"], outsider, f"{ACME}-qa")
    assert refused.status_code == 422 and "outside every organisation" in refused.json()["detail"]
    # endpoints are checked the same way, before anything else
    with werkhub.client(people["og-al"]) as al:
        reply = al.post(
            f"{API}/endpoints",
            json={"name": "x", "model": "og-al~m", "groups": [f"org-{BETA}"]},
        )
        assert reply.status_code == 422 and "across organisations" in reply.json()["detail"]


def test_the_command_line_and_removal(werkhub: Werkhub, people: dict[str, str]) -> None:
    done = werkhub.cli("orgs", "create", "ogcli", "Made on the command line", *state(werkhub))
    assert done.returncode == 0, done.stderr
    listed = werkhub.cli("orgs", "list", *state(werkhub))
    assert "ogcli\t0\tMade on the command line" in listed.stdout, listed.stdout
    bad = werkhub.cli("orgs", "create", "ogcli", "again", *state(werkhub))
    assert bad.returncode == 1 and "409" in bad.stderr
    with werkhub.admin() as admin:
        assert admin.delete(f"{API}/orgs/ogcli").status_code == 204
        assert admin.get(f"{API}/orgs/ogcli").status_code == 404
    assert hub_group(werkhub, "org-ogcli") is None


def state(werkhub: Werkhub) -> tuple[str, ...]:
    return ("--state", str(werkhub.state), "--config", str(werkhub.config))


def test_budgets_are_set_by_platform_admins(werkhub: Werkhub, people: dict[str, str]) -> None:
    with werkhub.admin() as admin:
        reply = admin.patch(
            f"{API}/orgs/{BETA}", json={"budget_gpu_hours": 120, "budget_period": "week"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["budget_gpu_hours"] == 120 and reply.json()["budget_period"] == "week"
        for bad in ({"budget_gpu_hours": -1}, {"budget_period": "year"}, {}, {"name": None}):
            assert admin.patch(f"{API}/orgs/{BETA}", json=bad).status_code == 422, bad
    with werkhub.client(people["og-bob"]) as bob:  # an organisation admin: not their call
        assert bob.patch(f"{API}/orgs/{BETA}", json={"budget_gpu_hours": 1e6}).status_code == 403


def test_organisation_admins_act_for_their_members(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    from tests.hub.test_pages import login

    werkhub.spawn("og-al", people["og-al"])
    with werkhub.client(people["og-ann"]) as ann:
        listed = ann.get(f"{API}/orgs/{ACME}/servers")
        assert listed.status_code == 200, listed.text
        assert [(s["user"], s["ready"]) for s in listed.json()] == [("og-al", True)]
        # the other organisation's admin: as if there were nothing
        with werkhub.client(people["og-bob"]) as bob:
            assert bob.get(f"{API}/orgs/{ACME}/servers").status_code == 404
            assert bob.delete(f"{API}/orgs/{ACME}/servers/og-al").status_code == 404
            assert bob.delete(f"{API}/orgs/{BETA}/servers/og-al").status_code == 404
        with werkhub.client(people["og-al"]) as al:  # a member is no admin
            assert al.get(f"{API}/orgs/{ACME}/servers").status_code == 403
        assert ann.delete(f"{API}/orgs/{ACME}/servers/og-al").status_code == 204
        assert ann.get(f"{API}/orgs/{ACME}/jobs").json() == []
        assert ann.post(f"{API}/orgs/{ACME}/jobs/999999/pause").status_code == 404
        # a new password for a member, shown once; it logs in
        reply = ann.post(f"{API}/orgs/{ACME}/members/og-al/password")
        assert reply.status_code == 200, reply.text
        login(werkhub, "og-al", reply.json()["password"]).close()
        assert ann.post(f"{API}/orgs/{ACME}/members/og-bea/password").status_code == 404


def test_organisation_admins_invite_new_members(werkhub: Werkhub, people: dict[str, str]) -> None:
    from tests.security.test_accounts import Browser

    with werkhub.client(people["og-ann"]) as ann:
        reply = ann.post(f"{API}/orgs/{ACME}/invitations", json={"name": "og-newbie"})
        assert reply.status_code == 201, reply.text
        code = reply.json()["link"].split("invite=", 1)[1]
        # someone of another organisation, or who can log in already: refused
        taken = ann.post(f"{API}/orgs/{ACME}/invitations", json={"name": "og-bea"})
        assert taken.status_code == 404
        assert (
            ann.post(f"{API}/orgs/{ACME}/invitations", json={"name": "Bad Name"}).status_code == 422
        )
        members = {m["user"] for m in ann.get(f"{API}/orgs/{ACME}/members").json()}
        assert "og-newbie" in members
    with werkhub.client(people["og-bob"]) as bob:
        assert bob.post(f"{API}/orgs/{ACME}/invitations", json={"name": "x-y"}).status_code == 404
    with Browser(werkhub) as newbie:
        newbie.signup("og-newbie", invite=code)
        assert newbie.login("og-newbie") == "og-newbie"
    assert "og-newbie" in (hub_group(werkhub, f"org-{ACME}") or [])
