"""The federation store (migration 0013) on SQLite and PostgreSQL: parties move only
from the states the rules allow and a refused move writes nothing, a run starts only with
enough accepted parties and never beside another, rounds are recorded once."""

from __future__ import annotations

from typing import Any

import pytest

from werkhub.db import make_engines, upgrade
from werkhub.errors import Conflict, NotFound
from werkhub.federation import rules
from werkhub.federation.store import FederationStore


@pytest.fixture
def store(db_url: str) -> FederationStore:
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    return FederationStore(writer, reader)


def federation(name: str = "quality", org: str = "acme") -> dict[str, Any]:
    return {
        "name": name,
        "owner": "ann",
        "owner_org": org,
        "app": {"template": "federated-quality-inspection"},
        "strategy": "fedavg",
        "rounds": 3,
        "min_parties": 2,
        "secure_aggregation": None,
        "run_config": {"lr": 0.1},
    }


def test_create_list_and_names_unique_per_organisation(store: FederationStore) -> None:
    made = store.create(federation(), ["beta", "gamma"], "ann")
    assert made["state"] == "open" and made["run_config"] == {"lr": 0.1}
    assert [(p["org"], p["state"]) for p in made["parties"]] == [
        ("beta", "invited"),
        ("gamma", "invited"),
    ]
    with pytest.raises(Conflict, match="named 'quality' already"):
        store.create(federation(), [], "ann")
    other = store.create(federation(org="delta"), [], "dan")  # another organisation's
    assert [f["id"] for f in store.listing("acme")] == [made["id"]]
    assert [f["id"] for f in store.listing("beta")] == [made["id"]]
    assert [f["id"] for f in store.listing("delta")] == [other["id"]]
    assert store.listing("omega") == []
    assert len(store.listing(None, everything=True)) == 2
    with pytest.raises(NotFound):
        store.get(9999)


def test_party_moves_follow_the_rules(store: FederationStore) -> None:
    fid = store.create(federation(), ["beta"], "ann")["id"]
    with pytest.raises(Conflict, match="only a party that is accepted can be left"):
        store.move_party(fid, "beta", "leave", "bob")
    assert store.get(fid)["parties"][0]["state"] == "invited"  # nothing written
    before, row = store.move_party(
        fid, "beta", "accept", "bob", {"user": "bob", "data_folder": "data", "gpus": 1}
    )
    assert before == "invited" and row["state"] == "accepted" and row["user"] == "bob"
    with pytest.raises(Conflict, match="is accepted"):
        store.move_party(fid, "beta", "accept", "bob", {"user": "bea"})
    assert store.get(fid)["parties"][0]["user"] == "bob"
    store.move_party(fid, "beta", "revoke", "ann")
    with pytest.raises(Conflict, match="was not invited"):
        store.move_party(fid, "gamma", "accept", "gil")
    # invited again: a fresh answer, nothing kept of the former one
    _, row = store.move_party(fid, "beta", "invite", "ann")
    assert row["state"] == "invited" and row["user"] is None and row["gpus"] == 0
    _, row = store.move_party(fid, "gamma", "invite", "ann")
    assert row["state"] == "invited"


def test_runs_need_parties_and_go_one_at_a_time(store: FederationStore) -> None:
    fid = store.create(federation(), ["beta", "gamma"], "ann")["id"]
    run = {"rounds": 3, "secure_aggregation": False, "parties": [], "started_by": "ann"}
    with pytest.raises(Conflict, match="only 0 organisation"):
        store.start_run(fid, run, 2)
    for slug in ("beta", "gamma"):
        store.move_party(fid, slug, "accept", slug, {"user": f"{slug}-admin", "data_folder": "d"})
    first = store.start_run(fid, run, 2)
    assert first["status"] == "starting" and first["round_list"] == []
    with pytest.raises(Conflict, match="still going"):
        store.start_run(fid, run, 2)
    assert [r["id"] for r in store.live_runs()] == [first["id"]]
    found = rules.parse_round('{"round": 1, "parties": 2, "loss": 0.5, "metrics": {"f1": 0.8}}')
    assert store.add_round(first["id"], found) is True
    assert store.add_round(first["id"], found) is False  # once only
    flower_id = 2**64 - 5  # Flower's run ids are unsigned 64-bit
    assert store.update_run(
        first["id"], {"status": "running", "flower_run_id": flower_id}, when=("starting",)
    )
    assert store.run(fid, first["id"])["flower_run_id"] == flower_id
    assert not store.update_run(first["id"], {"status": "failed"}, when=("starting",))
    assert store.update_run(first["id"], {"status": "finished"}, when=("running",))
    ended = store.run(fid, first["id"])
    assert ended["ended"] is not None and ended["round_list"][0]["metrics"] == {"f1": 0.8}
    assert store.live_runs() == []
    # a run the owner started with flwr run comes with its Flower id
    second = store.start_run(fid, {**run, "flower_run_id": 2**64 - 9}, 2)
    assert second["flower_run_id"] == 2**64 - 9
    assert [r["id"] for r in store.runs(fid)] == [first["id"], second["id"]]
    with pytest.raises(NotFound):
        store.run(fid + 1, second["id"])
