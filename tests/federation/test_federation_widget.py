"""federation() widget without a kernel, against a real werkhub: federations of the user's
organisation, parties and their state, a run started by the owner (a refusal is a
message), each round shown as it arrives while the widget polls (rounds written by the
service's own store, as its supervisor does), the final message and the registered
model, a run stopped from the widget; others see nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.federation.world import FED, World, make_world, ok
from tests.support.hub import running_werkhub
from tests.support.wait import wait_for
from werkhub.db import make_engines
from werkhub.federation.rules import Round
from werkhub.federation.store import FederationStore
from werkhub_widgets import WerkhubClient
from werkhub_widgets.federation import FederationWidget

APP = {"template": "federated-quality-inspection"}
ROW = {"rounds": 2, "secure_aggregation": True, "parties": ["fedbeta", "fedgamma"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_werkhub(tmp_path_factory.mktemp("fedwidget")) as hub:
        yield make_world(hub)


@pytest.fixture(scope="module")
def fid(world: World) -> int:
    with world.client("fa-ann") as ann:
        made = ok(
            ann.post(
                FED,
                json={
                    "name": "widgets",
                    "app": APP,
                    "rounds": 2,
                    "invite": ["fedbeta", "fedgamma"],
                },
            )
        )
    return int(made["id"])


@pytest.fixture
def store(world: World) -> Iterator[FederationStore]:
    writer, reader = make_engines(f"sqlite:///{world.hub.state / 'werkhub.sqlite'}")
    yield FederationStore(writer, reader)
    writer.dispose()
    reader.dispose()


def widget(world: World, user: str, *args: Any, **kw: Any) -> FederationWidget:
    client = WerkhubClient(f"{world.hub.url}/services/werkhub/", world.tokens[user])
    return FederationWidget(client, *args, **kw)


def test_lists_federations_and_parties(world: World, fid: int) -> None:
    w = widget(world, "fa-ann", poll_seconds=0)
    assert w.error is None, w.text
    assert "widgets" in w.listing.value and w.picker.value == fid
    assert "data-state='invited'" in w.detail.value and "fedgamma" in w.detail.value
    assert "aggregation off (on from 3 parties)" in w.detail.value
    assert w.owner_box.layout.display == "" and w.rounds.value == 2  # an owner admin
    assert w.run is None and "No runs yet" in w.run_view.value
    by_name = widget(world, "fa-ann", "widgets", poll_seconds=0)
    assert by_name.picker.value == fid and by_name.error is None
    assert widget(world, "fa-ann", str(fid), poll_seconds=0).picker.value == fid
    # an invited organisation's member sees it, without the owner's controls
    bea = widget(world, "fb-bea", poll_seconds=0)
    assert bea.picker.value == fid and bea.owner_box.layout.display == "none"
    # another organisation sees nothing, also when naming it
    dan = widget(world, "fd-dan", fid, poll_seconds=0)
    assert "No federation yet" in dan.listing.value and dan.picker.value is None
    assert "Not found" in dan.text and str(fid) in dan.text
    lone = widget(world, "fx-lone", "widgets", poll_seconds=0)
    assert lone.federations == [] and "Not found" in lone.text


def test_a_refused_start_is_a_message(world: World, fid: int) -> None:
    w = widget(world, "fa-ann", fid, poll_seconds=0)
    assert w.start() is None
    assert "Conflict" in w.text and "accepted" in w.text, w.text  # nobody accepted yet
    with world.client("fa-ann") as ann:
        assert ok(ann.get(f"{FED}/{fid}/runs")) == []
    w.picker.value = None
    assert w.start() is None and "Choose a federation" in w.text
    assert w.stop_run() is False and "Choose a run" in w.text


def test_rounds_arrive_while_the_widget_polls(
    world: World, fid: int, store: FederationStore
) -> None:
    for slug, user in (("fedbeta", "fb-bob"), ("fedgamma", "fg-gil")):  # as accepting does
        store.move_party(fid, slug, "accept", user, {"user": user, "data_folder": "d"})
    run = store.start_run(fid, {**ROW, "started_by": "fa-ann"}, 2)
    store.update_run(run["id"], {"status": "running", "flower_run_id": 77})
    w = widget(world, "fa-ann", "widgets", poll_seconds=0.3)
    assert w.run is not None and w.run["id"] == run["id"], w.text
    assert w._stop is not None  # a running run: the widget polls it
    assert "No round finished yet" in w.run_view.value
    store.add_round(run["id"], Round(1, 2, 0.7, {"macro_f1": 0.6}, 100, 200, 1.0))
    wait_for(lambda: "data-rounds='1'" in w.run_view.value, timeout=30, interval=0.2)
    store.add_round(run["id"], Round(2, 1, 0.4, {"macro_f1": 0.8}, 100, 200, 1.0))
    wait_for(lambda: "data-rounds='2'" in w.run_view.value, timeout=30, interval=0.2)
    assert "<td>0.4</td>" in w.run_view.value and w.run_view.value.count("<polyline") == 2
    store.update_run(
        run["id"],
        {
            "status": "finished",
            "message": "finished 2 round(s); model fa-ann~federation-widgets version 1",
            "mlflow": {"experiment_id": "3", "run_id": "abc"},
            "model": {"name": "fa-ann~federation-widgets", "version": "1"},
        },
    )
    wait_for(lambda: w._stop is None, timeout=30, interval=0.2)  # it ended: polling stops
    assert "data-status='finished'" in w.run_view.value
    assert "fa-ann~federation-widgets" in w.run_view.value and "#/experiments/3/runs/abc" in (
        w.run_view.value
    )
    assert "finished after 2 rounds" in w.text and "version 1 registered" in w.text
    assert w.stop_button.disabled
    # a party's admin sees the same rounds (and no owner controls)
    bob = widget(world, "fb-bob", fid, poll_seconds=0)
    assert "data-rounds='2'" in bob.run_view.value and bob.owner_box.layout.display == "none"


def test_stop_a_run_from_the_widget(world: World, fid: int, store: FederationStore) -> None:
    run = store.start_run(fid, {**ROW, "started_by": "fa-ann"}, 2)  # starting, no Flower id
    w = widget(world, "fa-ann", fid, poll_seconds=0)
    assert w.run is not None and w.run["id"] == run["id"]
    assert w.run_picker.options[0][1] == run["id"] and len(w.run_picker.options) == 2
    assert w.stop_run(), w.text
    assert "is stopping" in w.text and w.run["status"] == "stopped"
    assert "stopped by fa-ann" in w.run_view.value
    assert not w.stop_run() and "ended already" in w.text
