"""endpoints() widget without a kernel, against a real werkhub: deploy a registered model
and the model of an MLflow run (registered first in the user's ~ name space), watch it get
ready, try it with the registered input example, see the figures; refusals are messages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.hub import Werkhub
from tests.support.serving import register_tagged
from tests.support.wait import wait_for
from werkhub_widgets import WerkhubClient
from werkhub_widgets.endpoints import EndpointsWidget
from werkhub_widgets.tracking_client import TrackingClient

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
OWNER, STRANGER = "epw-ann", "epw-ben"
MODEL = f"{OWNER}~press"
ANSWER = {"predictions": [1.0, 1.0]}


@pytest.fixture(scope="module")
def setup(werkhub: Werkhub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tokens = {name: werkhub.create_user(name) for name in (OWNER, STRANGER)}
    folder = tmp_path_factory.mktemp("endpoint-models")
    version = register_tagged(werkhub.url, tokens[OWNER], OWNER, MODEL, 1, folder, "champion")
    found = tracking(werkhub, tokens[OWNER]).call(
        "GET", "model-versions/get", params={"name": MODEL, "version": version}
    )
    return {"tokens": tokens, "version": version, "run": found["model_version"]["run_id"]}


def tracking(werkhub: Werkhub, token: str) -> TrackingClient:
    return TrackingClient(f"{werkhub.url}/services/mlflow", token)


def widget(werkhub: Werkhub, token: str, **kw: Any) -> EndpointsWidget:
    client = WerkhubClient(f"{werkhub.url}/services/werkhub/", token)
    return EndpointsWidget(client, tracking(werkhub, token), **kw)


def test_deploy_a_registered_model_watch_and_try(werkhub: Werkhub, setup: dict[str, Any]) -> None:
    w = widget(werkhub, setup["tokens"][OWNER], watch_seconds=0.3)
    assert w.error is None, w.text
    assert "No endpoints yet" in w.listing.value
    w.model.value = MODEL
    assert w.name.value == "press"  # suggested from the model's name
    w.always_on.value = False  # scale to zero after idle minutes
    w.idle.value = 5
    created = w.deploy()
    assert created is not None, w.text
    assert created["alias"] == "champion" and created["min_replicas"] == 0
    assert created["idle_minutes"] == 5 and "is starting" in w.text
    assert w.picker.value == (OWNER, "press") and w.watching.value
    # the watch thread refreshes on its own until the endpoint is ready
    wait_for(lambda: (w.selected() or {}).get("state") == "ready", timeout=180, interval=0.3)
    w.watch(False)
    assert not w.watching.value and w._stop is None
    w.refresh()
    assert "data-state='ready'" in w.detail.value and setup["version"] in w.detail.value
    assert "press" in w.listing.value and f"/endpoints/{OWNER}/press/invocations" in w.listing.value
    answer = w.try_it()
    assert answer == ANSWER, w.text
    assert "answered in" in w.text and "temperature" in w.output.value
    assert "predictions" in w.output.value
    # the figures: the running minute counts the request, in the plot too
    assert sum(f["requests"] for f in w.figures) == 1, w.figures
    assert "data-requests='1'" in w.detail.value and w.detail.value.count("<svg") == 2
    for _ in range(3):
        assert w.try_it() == ANSWER
    assert "data-requests='4'" in w.detail.value
    assert w.delete() and "deleted" in w.text
    assert w.endpoints == [] and w.detail.value == ""


def test_deploy_the_model_of_a_run(werkhub: Werkhub, setup: dict[str, Any]) -> None:
    token = setup["tokens"][OWNER]
    w = widget(werkhub, token, watch_seconds=0)
    w.source.value = "run"
    assert w.run_box.layout.display == "" and w.model_box.layout.display == "none"
    w.run_id.value = setup["run"]
    w.register_as.value = "press-from-run"
    assert w.name.value == "press-from-run"
    w.pin.value = "alias"  # ignored: the new version is pinned
    created = w.deploy()
    assert created is not None, w.text
    assert created["model"] == f"{OWNER}~press-from-run" and created["version"] == "1"
    assert not w.watching.value  # watch_seconds=0: no thread
    ready = w.wait(("ready", "failed"), timeout=180)
    assert ready["state"] == "ready", ready
    assert w.try_it() == ANSWER, w.text
    # the registered version points at the run's logged model
    version = tracking(werkhub, token).call(
        "GET", "model-versions/get", params={"name": f"{OWNER}~press-from-run", "version": "1"}
    )["model_version"]
    assert version["run_id"] == setup["run"] and version["source"].startswith("models:/m-")
    # registering again makes the next version of the same model
    assert w.register()["version"] == "2"
    assert w.delete(), w.text


def test_refusals_are_messages(
    werkhub: Werkhub, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = widget(werkhub, setup["tokens"][OWNER], watch_seconds=0)
    assert w.deploy() is None and "model: name a registered model" in w.text
    w.model.value = MODEL
    w.name.value = "Bad Name"
    assert w.deploy() is None and "Please check the input" in w.text
    w.name.value = "press"
    w.pin.value = "version"
    w.reference.value = "99"
    assert w.deploy() is None and w.error, w.text
    assert w.try_it() is None and "Choose an endpoint" in w.text
    w.source.value = "run"
    assert w.deploy() is None and "run id: paste" in w.text
    w.run_id.value = "x' OR '1"
    assert w.deploy() is None and "is no MLflow run id" in w.text
    w.run_id.value = "0" * 32
    assert w.deploy() is None and w.error, w.text  # MLflow: no such run
    w.run_id.value = setup["run"]
    w.register_as.value = f"{STRANGER}~mine"
    assert w.deploy() is None and "belong to the user or group" in w.text
    # someone else's model or run: not found, nothing registered, nothing served
    other = widget(werkhub, setup["tokens"][STRANGER], watch_seconds=0)
    other.model.value = MODEL
    assert other.deploy() is None and "Not found" in other.text
    other.source.value = "run"
    other.run_id.value = setup["run"]
    other.register_as.value = "stolen"
    assert other.deploy() is None and other.error, other.text
    with werkhub.client(setup["tokens"][OWNER]) as api:
        assert api.get(f"{API}/endpoints").json() == []
    # outside a werkhub server
    monkeypatch.delenv("WERKHUB_SERVICE_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    bare = EndpointsWidget()
    assert bare.client is None and "Not inside a werkhub server" in bare.text
    assert bare.deploy() is None and bare.error
