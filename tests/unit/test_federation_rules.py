"""Pure rules of federations: bodies refused with sentences, who may do what, the moves
of parties and runs, the SecAgg+ default, and the app's files read without trust."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from werkhub.federation import rules
from werkhub.federation.rules import AppFileError, Standing
from werkhub.orgs.rules import Actor

BODY = {"name": "quality", "app": {"template": "federated-quality-inspection"}}


def test_create_body_defaults_and_refusals() -> None:
    body = rules.FederationCreate.model_validate(BODY)
    assert (body.strategy, body.rounds, body.min_parties, body.secure_aggregation) == (
        "fedavg",
        10,
        2,
        None,
    )
    for bad, words in (
        ({**BODY, "name": "Bad Name"}, "pattern"),
        ({**BODY, "min_parties": 1}, "greater than or equal to 2"),
        ({**BODY, "strategy": "fedsgd"}, "fedavg"),
        ({**BODY, "app": {}}, "exactly one"),
        ({**BODY, "app": {"template": "x", "folder": "a"}}, "federated-quality-inspection"),
        ({**BODY, "app": {"folder": "../other/app"}}, "no '..'"),
        ({**BODY, "app": {"folder": "/etc"}}, "relative"),
        ({**BODY, "invite": ["beta", "beta"]}, "twice"),
        ({**BODY, "run_config": {"Bad Key": 1}}, "lower-case"),
        ({**BODY, "run_config": {"lr": float("nan")}}, "finite"),
        ({**BODY, "rounds": 0}, "greater than or equal to 1"),
        ({**BODY, "owner": "x"}, "Extra inputs"),
    ):
        with pytest.raises(ValidationError, match=words):
            rules.FederationCreate.model_validate(bad)
    assert rules.FederationCreate.model_validate(
        {**BODY, "app": {"folder": "./apps//mine/"}}
    ).app.folder == ("apps/mine")


def test_accept_body() -> None:
    assert rules.Acceptance.model_validate({"data_folder": "data/beta"}).gpus == 0
    for bad in ({"data_folder": ".ssh"}, {"data_folder": "a/../.."}, {"data_folder": ""}):
        with pytest.raises(ValidationError):
            rules.Acceptance.model_validate(bad)
    with pytest.raises(ValidationError):
        rules.Acceptance.model_validate({"data_folder": "d", "gpus": -1})


def standing(actor: Actor) -> Standing:
    return Standing(actor, "ann", "acme", {"beta": "accepted", "gamma": "invited"})


def test_who_may_do_what() -> None:
    creator = standing(Actor("ann", org="acme"))
    owner_admin = standing(Actor("al", org="acme", org_admin=True))
    owner_member = standing(Actor("amy", org="acme"))
    party_admin = standing(Actor("bob", org="beta", org_admin=True))
    party_member = standing(Actor("bea", org="beta"))
    stranger = standing(Actor("dan", org="delta", org_admin=True))
    platform = standing(Actor("root", platform_admin=True))
    assert [s.sees for s in (creator, owner_member, party_member, stranger, platform)] == [
        True,
        True,
        True,
        False,
        True,
    ]
    assert [s.owns for s in (creator, owner_admin, owner_member, party_admin, platform)] == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert owner_admin.invites() and not creator.invites() and not party_admin.invites()
    assert party_admin.answers_for("beta") and not party_admin.answers_for("gamma")
    assert not party_member.answers_for("beta") and platform.answers_for("gamma")


def test_moves() -> None:
    assert rules.party_move("invite", "beta", None) == "invited"
    assert rules.party_move("accept", "beta", "invited") == "accepted"
    assert rules.party_move("invite", "beta", "revoked") == "invited"
    with pytest.raises(ValueError, match="'beta' is accepted"):
        rules.party_move("invite", "beta", "accepted")
    with pytest.raises(ValueError, match="not invited"):
        rules.party_move("accept", "beta", None)
    with pytest.raises(ValueError, match="can be declined"):
        rules.party_move("decline", "beta", "left")
    assert rules.run_move("starting", "running") and not rules.run_move("finished", "running")
    assert rules.secure_aggregation(None, 3) and not rules.secure_aggregation(None, 2)
    assert rules.secure_aggregation(True, 2) and not rules.secure_aggregation(False, 5)
    assert "at least 3" in (rules.start_refusal(2, 3, False) or "")
    assert rules.start_refusal(3, 3, False) is None and rules.start_refusal(3, 3, True)
    config = rules.flower_run_config("fedprox", 4, 2, True, {"num-server-rounds": 99, "lr": 1})
    assert config == {
        "lr": 1,
        "num-server-rounds": 4,
        "strategy": "fedprox",
        "min-parties": 2,
        "secure-aggregation": True,
    }


def test_app_files_are_checked() -> None:
    found = rules.parse_round(
        '{"round": 2, "parties": 3, "loss": 0.4, "metrics": {"macro_f1": 0.8},'
        ' "bytes_in": 10, "bytes_out": 20, "seconds": 1.5}'
    )
    assert (found.round, found.parties, found.metrics, found.bytes_out) == (
        2,
        3,
        {"macro_f1": 0.8},
        20,
    )
    for bad in (
        "not json",
        "[1]",
        '{"round": 0, "parties": 1}',
        '{"round": "1", "parties": 1}',
        '{"round": 1, "parties": 1, "loss": "NaN"}',
        '{"round": 1, "parties": 1, "metrics": {"a": true}}',
        '{"round": 1, "parties": 1, "metrics": {"<script>": 1}}',
        '{"round": 1, "parties": 1, "metrics": ' + str({f"m{i}": 1 for i in range(65)}) + "}",
        "x" * (rules.MAX_LINE + 1),
    ):
        with pytest.raises(AppFileError):
            rules.parse_round(bad.replace("'", '"'))
    local = rules.parse_local('{"round": 1, "examples": 12, "metrics": {"local_loss": 0.3}}')
    assert local.examples == 12
    final = rules.parse_final('{"rounds": 3, "metrics": {}, "classes": ["ok", "scratch"]}')
    assert final.model == "model.npz" and final.classes == ("ok", "scratch")
    with pytest.raises(AppFileError):
        rules.parse_final('{"rounds": 3, "model": "../../etc/passwd"}')
    assert rules.parse_error('{"message": "only 1 of 3 parties replied\\u0007"}') == (
        "only 1 of 3 parties replied"
    )
    assert "could not describe" in rules.parse_error("{}")
    assert len(rules.parse_error('{"message": "' + "a" * 5000 + '"}')) == 1000


def test_run_config_fits_the_app() -> None:
    config = rules.flower_run_config("fedavg", 3, 2, False, {"lr": 0.1})
    known = {"num-server-rounds", "min-parties", "lr", "batch"}
    assert rules.fit_run_config(config, known) == {
        "lr": 0.1,
        "num-server-rounds": 3,
        "min-parties": 2,
    }
    with pytest.raises(ValueError, match="epochs are not settings of this app"):
        rules.fit_run_config({**config, "epochs": 2}, known)


def test_a_bookings_devices_for_the_partys_sandbox() -> None:
    booking = {"devices": ["n1/3", "n1/0"], "simulated": False}
    assert rules.device_paths(booking) == ("/dev/nvidia0", "/dev/nvidia3")
    assert rules.device_paths({**booking, "simulated": True}) == ()
    assert rules.device_paths({"devices": []}) == ()
