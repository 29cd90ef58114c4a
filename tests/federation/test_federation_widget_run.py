"""The owner starts a real run from federation() (real SuperLink and SuperNodes in the
parties' sandboxes, the test app from the owner's home) and the widget shows its rounds
as they arrive, the final message and the registered model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from tests.federation.world import FED, World, make_world, ok
from tests.support.hub import ROOT, running_werkhub
from tests.support.wait import wait_for
from werkhub_widgets import WerkhubClient
from werkhub_widgets.federation import FederationWidget

TINY = ROOT / "tests" / "federation" / "apps" / "tiny"
PARTIES = {"fedbeta": "fb-bob", "fedgamma": "fg-gil"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_werkhub(tmp_path_factory.mktemp("fedwidgetrun")) as hub:
        world = make_world(hub)
        shutil.copytree(TINY, world.home("fa-ann") / "tinyapp")
        rng = np.random.default_rng(11)
        for user in PARTIES.values():
            folder = world.home(user) / "fed-data"
            folder.mkdir()
            x = rng.normal(size=(40, 4))
            y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25
            np.savetxt(folder / "points.csv", np.column_stack([x, y]), delimiter=",")
        yield world


def test_the_owner_runs_it_from_the_widget(world: World) -> None:
    body = {
        "name": "from-widget",
        "app": {"folder": "tinyapp"},
        "rounds": 2,
        "invite": list(PARTIES),
        "secure_aggregation": False,
    }
    with world.client("fa-ann") as ann:
        fid = int(ok(ann.post(FED, json=body))["id"])
    for admin in PARTIES.values():
        with world.client(admin) as api:
            ok(api.post(f"{FED}/{fid}/accept", json={"data_folder": "fed-data"}))
    client = WerkhubClient(f"{world.hub.url}/services/werkhub/", world.tokens["fa-ann"])
    w = FederationWidget(client, "from-widget", poll_seconds=0.5)
    assert w.error is None and w.owner_box.layout.display == "", w.text
    assert "data-state='accepted'" in w.detail.value
    w.rounds.value = 3
    run = w.start()
    assert run is not None, w.text
    assert "started" in w.text and w.run is not None and w._stop is not None
    # each round appears while the widget polls; then the end, the model, no more polling
    wait_for(lambda: "data-rounds='1'" in w.run_view.value, timeout=300, interval=0.5)
    wait_for(lambda: w._stop is None, timeout=300, interval=0.5)
    assert w.run["status"] == "finished", w.run["message"]
    assert "data-rounds='3'" in w.run_view.value and "<td>2</td>" in w.run_view.value
    model = w.run["model"]
    assert model == {"name": "fa-ann~federation-from-widget", "version": "1"}
    assert "finished after 3 rounds" in w.text and "version 1 registered" in w.text
    assert "fa-ann~federation-from-widget" in w.run_view.value
    # a party's admin sees the same run and the model, without the owner's controls
    bob = FederationWidget(
        WerkhubClient(f"{world.hub.url}/services/werkhub/", world.tokens["fb-bob"]),
        fid,
        poll_seconds=0,
    )
    assert "data-rounds='3'" in bob.run_view.value and bob.owner_box.layout.display == "none"
    assert "Your organisation's in MLflow" in bob.run_view.value  # bob's party run
