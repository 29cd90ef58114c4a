"""The federations API on a real werkhub: bodies refused with sentences, who may invite,
accept, decline, leave and revoke, another organisation's federation answers 404 to every
route, a party's user and data folder are shown to its own organisation only, and a
failed registration leaves the party invited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.federation.world import FED, World, make_world, ok
from tests.support.hub import running_werkhub

APP = {"template": "federated-quality-inspection"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_werkhub(tmp_path_factory.mktemp("fedapi")) as hub:
        yield make_world(hub)


@pytest.fixture(scope="module")
def fid(world: World) -> int:
    with world.client("fa-al") as al:  # a member of fedacme creates it
        made = ok(
            al.post(
                FED,
                json={
                    "name": "quality",
                    "app": APP,
                    "rounds": 3,
                    "invite": ["fedbeta", "fedgamma"],
                    "run_config": {"lr": 0.1},
                },
            )
        )
    assert made["owner"] == "fa-al" and made["owner_org"] == "fedacme"
    assert made["secure_aggregation_setting"] is None
    assert [(p["org"], p["state"]) for p in made["parties"]] == [
        ("fedbeta", "invited"),
        ("fedgamma", "invited"),
    ]
    return int(made["id"])


def test_bodies_are_refused_with_sentences(world: World, fid: int) -> None:
    with world.client("fa-al") as al:
        for body, words in (
            ({"name": "x y", "app": APP}, "name"),
            ({"name": "two", "app": APP, "min_parties": 1}, "min_parties"),
            ({"name": "two", "app": {}}, "exactly one"),
            ({"name": "two", "app": {"folder": "../fb-bob"}}, "no '..'"),
            ({"name": "two", "app": APP, "strategy": "fedsgd"}, "strategy"),
            ({"name": "two", "app": APP, "invite": ["nosuchorg"]}, "no organisation"),
        ):
            reply = al.post(FED, json=body)
            assert reply.status_code == 422, (body, reply.text)
            assert words in reply.text, reply.text
        again = al.post(FED, json={"name": "quality", "app": APP})
        assert again.status_code == 409 and "already" in again.json()["detail"]
        missing = al.post(FED, json={"name": "own", "app": {"folder": "no/such/app"}})
        assert missing.status_code in (409, 503), missing.text
    with world.client("fx-lone") as lone:
        reply = lone.post(FED, json={"name": "mine", "app": APP})
        assert reply.status_code == 403 and "organisation" in reply.json()["detail"]
        assert ok(lone.get(FED)) == []


def test_others_get_404_on_every_route(world: World, fid: int) -> None:
    with world.client("fd-dan") as dan:
        assert fid not in [f["id"] for f in ok(dan.get(FED))]
        for method, path, body in (
            ("GET", f"{FED}/{fid}", None),
            ("POST", f"{FED}/{fid}/invitations", {"org": "feddelta"}),
            ("POST", f"{FED}/{fid}/accept", {"data_folder": "d"}),
            ("POST", f"{FED}/{fid}/decline", None),
            ("POST", f"{FED}/{fid}/leave", None),
            ("POST", f"{FED}/{fid}/revoke", {"org": "fedbeta"}),
            ("POST", f"{FED}/{fid}/runs", {}),
            ("GET", f"{FED}/{fid}/runs", None),
            ("GET", f"{FED}/{fid}/runs/1", None),
            ("POST", f"{FED}/{fid}/runs/1/stop", None),
            ("GET", f"{FED}/{fid}/flwr-config", None),
            ("GET", f"{FED}/999999", None),
        ):
            reply = dan.request(method, path, json=body)
            assert reply.status_code == 404, (method, path, reply.text)
            assert "No federation" in reply.json()["detail"]
    with world.hub.admin() as admin:  # platform admins see every federation
        assert fid in [f["id"] for f in ok(admin.get(FED))]


def test_who_may_invite_answer_and_revoke(world: World, fid: int) -> None:
    with world.client("fb-bea") as bea:  # a member of an invited organisation sees it
        seen = ok(bea.get(f"{FED}/{fid}"))
        assert seen["run_config"] == {}  # the owner's settings are the owner's
        reply = bea.post(f"{FED}/{fid}/decline")
        assert reply.status_code == 403 and "admin" in reply.json()["detail"]
    with world.client("fa-al") as al:  # the creator is no admin of fedacme
        reply = al.post(f"{FED}/{fid}/invitations", json={"org": "feddelta"})
        assert reply.status_code == 403 and "fedacme" in reply.json()["detail"]
        assert ok(al.get(f"{FED}/{fid}"))["run_config"] == {"lr": 0.1}
    with world.client("fb-bob") as bob:  # a party's admin does not invite either
        assert bob.post(f"{FED}/{fid}/invitations", json={"org": "feddelta"}).status_code == 403
        assert bob.post(f"{FED}/{fid}/revoke", json={"org": "fedgamma"}).status_code == 403
    with world.client("fa-ann") as ann:
        made = ok(ann.post(f"{FED}/{fid}/invitations", json={"org": "feddelta"}))
        assert ("feddelta", "invited") in [(p["org"], p["state"]) for p in made["parties"]]
        twice = ann.post(f"{FED}/{fid}/invitations", json={"org": "feddelta"})
        assert twice.status_code == 409 and "invited" in twice.json()["detail"]
        unknown = ann.post(f"{FED}/{fid}/invitations", json={"org": "nosuchorg"})
        assert unknown.status_code == 422
    with world.client("fd-dan") as dan:  # invited: now it sees the federation, and declines
        assert ok(dan.get(f"{FED}/{fid}"))["name"] == "quality"
        declined = ok(dan.post(f"{FED}/{fid}/decline"))
        assert ("feddelta", "declined") in [(p["org"], p["state"]) for p in declined["parties"]]
        again = dan.post(f"{FED}/{fid}/accept", json={"data_folder": "d"})
        assert again.status_code == 409 and "declined" in again.json()["detail"]
        leave = dan.post(f"{FED}/{fid}/leave")
        assert leave.status_code == 409
    with world.client("fa-al") as al:  # the creator revokes
        revoked = ok(al.post(f"{FED}/{fid}/revoke", json={"org": "fedgamma"}))
        assert ("fedgamma", "revoked") in [(p["org"], p["state"]) for p in revoked["parties"]]
        for slug in ("fedgamma", "feddelta"):  # revoked already; declined
            none = al.post(f"{FED}/{fid}/revoke", json={"org": slug})
            assert none.status_code == 409 and "can be revoked" in none.json()["detail"]
    with world.client("fg-gil") as gil:  # a revoked organisation still sees, cannot accept
        again = gil.post(f"{FED}/{fid}/accept", json={"data_folder": "d"})
        assert again.status_code == 409 and "revoked" in again.json()["detail"]


def test_accepting_needs_a_data_folder_and_shows_it_to_its_own_only(world: World, fid: int) -> None:
    with world.client("fb-bob") as bob:
        for folder, status in (("../fa-al", 422), ("/etc", 422), ("not-there", 422)):
            reply = bob.post(f"{FED}/{fid}/accept", json={"data_folder": folder})
            assert reply.status_code == status, reply.text
            assert "data_folder" in reply.text
        state = {p["org"]: p["state"] for p in ok(bob.get(f"{FED}/{fid}"))["parties"]}
        assert state["fedbeta"] == "invited"  # nothing half-written
        folder = world.data_folder("fb-bob")
        accepted = ok(bob.post(f"{FED}/{fid}/accept", json={"data_folder": folder}))
        mine = next(p for p in accepted["parties"] if p["org"] == "fedbeta")
        assert (mine["state"], mine["user"], mine["data_folder"]) == ("accepted", "fb-bob", folder)
    with world.client("fa-ann") as ann:  # the owner sees the party, not its user or folder
        theirs = next(p for p in ok(ann.get(f"{FED}/{fid}"))["parties"] if p["org"] == "fedbeta")
        assert theirs["state"] == "accepted"
        assert theirs["user"] is None and theirs["data_folder"] is None
        # one party accepted, two are needed: no run, no run row
        refused = ann.post(f"{FED}/{fid}/runs", json={})
        assert refused.status_code == 409 and "at least 2" in refused.json()["detail"]
        assert ok(ann.get(f"{FED}/{fid}/runs")) == []
    with world.client("fb-bob") as bob:
        left = ok(bob.post(f"{FED}/{fid}/leave"))
        assert ("fedbeta", "left") in [(p["org"], p["state"]) for p in left["parties"]]


def test_flwr_config_for_the_owner(world: World, fid: int, tmp_path: Path) -> None:
    with world.client("fg-gil") as gil:
        assert gil.get(f"{FED}/{fid}/flwr-config").status_code == 403
    with world.client("fa-al") as al:
        found = ok(al.get(f"{FED}/{fid}/flwr-config"))
    assert found["address"].startswith("127.0.0.1:")
    assert "BEGIN CERTIFICATE" in found["ca_certificate"]
    assert found["address"] in found["config_toml"]
    # Flower takes only an absolute path to the CA: ~/.flwr in the owner's own server
    home = f"{world.hub.state / 'homes' / 'fa-al'}/.flwr"
    assert found["flwr_home"] == home and f'"{home}/ca.pem"' in found["config_toml"]
    with world.client("fa-al") as al:
        mine = ok(al.get(f"{FED}/{fid}/flwr-config", params={"flwr_home": "/opt/al/flwr/"}))
        assert '"/opt/al/flwr/ca.pem"' in mine["config_toml"]
        for bad in ("flwr", "/opt/../etc", '/a"b'):
            refused = al.get(f"{FED}/{fid}/flwr-config", params={"flwr_home": bad})
            assert refused.status_code == 422, refused.text
            assert "absolute folder" in refused.text


def test_the_command_line_lists_and_shows(world: World, fid: int) -> None:
    where = ("--state", str(world.hub.state), "--config", str(world.hub.config))
    listed = world.hub.cli("federations", "list", *where)
    assert listed.returncode == 0, listed.stderr
    assert f"{fid}\tquality\tfedacme\topen" in listed.stdout
    shown = world.hub.cli("federations", "show", str(fid), *where)
    assert shown.returncode == 0, shown.stderr
    assert "owner fa-al of fedacme" in shown.stdout and "fedbeta" in shown.stdout
    missing = world.hub.cli("federations", "show", "999999", *where)
    assert missing.returncode == 1 and "No federation 999999" in missing.stderr
