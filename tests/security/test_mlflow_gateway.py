"""MLflow through the gateway: experiment name spaces and the fail-closed allow-list.

A real ``werkhub up`` (hub, gateway, private MLflow with the basic-auth app); callers are
the real MLflow client and plain HTTP with nothing but a hub token.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import mlflow
import pytest
from mlflow.exceptions import MlflowException

from tests.hub.test_mlflow_auth import denied, mlflow_as
from tests.support.hub import Werkhub
from werkhub.tracking.identity import GatewaySecrets

pytestmark = pytest.mark.hub

V2 = "/services/mlflow/api/2.0/mlflow"
AJAX = "/services/mlflow/ajax-api/2.0/mlflow"
TEAM = "sq-team"
#: "sq-ann/x" in fullwidth letters, which NFKC folds to plain ones
WIDE = "\uff53\uff51-ann/x"


@pytest.fixture(scope="module")
def people(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in ("sq-ann", "sq-bob", "sq-cy")}
    werkhub.add_to_group(TEAM, ["sq-cy"])
    return tokens


def gateway_denied(call: Any, *args: Any) -> str:
    """The gateway's own refusal as the MLflow client shows it (code: message)."""
    with pytest.raises(MlflowException) as info:
        call(*args)
    assert info.value.error_code == "PERMISSION_DENIED", str(info.value)[:300]
    return str(info.value)


def exists(hub: Werkhub, name: str) -> bool:
    """Whether MLflow holds an experiment ``name`` (asked as a hub admin)."""
    with hub.admin() as api:
        reply = api.get(f"{V2}/experiments/get-by-name", params={"experiment_name": name})
    assert reply.status_code in (200, 404), reply.text
    return reply.status_code == 200


def refused_for_namespace(reply: httpx.Response, space: str) -> None:
    assert reply.status_code == 403, reply.text
    detail = reply.json()["detail"]
    assert f"'{space}/'" in detail and "belong to the user or group" in detail, detail


def test_squatting_another_users_name_space_is_refused(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    target = "sq-ann/quality-inspection"
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        message = gateway_denied(client.create_experiment, target)
        assert "belong to the user or group 'sq-ann'" in message
        gateway_denied(mlflow.set_experiment, target)  # get-by-name (404), then create
    with werkhub.client(people["sq-bob"]) as api:
        for base in (V2, AJAX):
            refused_for_namespace(
                api.post(f"{base}/experiments/create", json={"name": target}), "sq-ann"
            )
        # the same owner, spelt the ways a person would read as "sq-ann"
        for name in ("SQ-Ann/quality-inspection", " sq-ann /x", WIDE):
            reply = api.post(f"{V2}/experiments/create", json={"name": name})
            assert reply.status_code == 403, (name, reply.text)
        # a double-encoded body, as older clients send it, is read as MLflow reads it
        reply = api.post(
            f"{V2}/experiments/create",
            content=json.dumps(json.dumps({"name": target})),
            headers={"Content-Type": "application/json"},
        )
        refused_for_namespace(reply, "sq-ann")
        # chunked, with no length: still read and checked
        reply = api.post(
            f"{V2}/experiments/create",
            content=iter([b'{"name": "sq-ann/', b'chunked"}']),
            headers={"Content-Type": "application/json"},
        )
        refused_for_namespace(reply, "sq-ann")
        reply = api.post(
            f"{V2}/experiments/create",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 400 and "JSON" in reply.json()["detail"]
    for name in (target, "SQ-Ann/quality-inspection", "sq-ann/chunked", WIDE):
        assert not exists(werkhub, name), name
    # the rightful owner still gets the name, and the would-be squatter cannot read it
    with mlflow_as(werkhub, people["sq-ann"]) as client:
        experiment = client.create_experiment(target)
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        denied(client.get_experiment, experiment)


def test_own_name_space_free_names_and_admins(werkhub: Werkhub, people: dict[str, str]) -> None:
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        mine = client.create_experiment("sq-bob/own")
        assert client.get_experiment(mine).name == "sq-bob/own"
        assert client.get_experiment(client.create_experiment("sq-free-name")).name
        mlflow.set_experiment("sq-bob/set-by-name")  # what templates and jobs do
        client.create_run(mlflow.get_experiment_by_name("sq-bob/set-by-name").experiment_id)
    with mlflow_as(werkhub, werkhub.admin_token) as client:
        assert client.create_experiment("sq-cy/made-by-admin")


def test_group_name_space_is_its_members(werkhub: Werkhub, people: dict[str, str]) -> None:
    with mlflow_as(werkhub, people["sq-cy"]) as client:
        assert client.create_experiment(f"{TEAM}/shared-line")
    with werkhub.client(people["sq-bob"]) as api:
        reply = api.post(f"{V2}/experiments/create", json={"name": f"{TEAM}/bobs"})
        refused_for_namespace(reply, TEAM)
    assert exists(werkhub, f"{TEAM}/shared-line") and not exists(werkhub, f"{TEAM}/bobs")


def test_renaming_into_another_name_space_is_refused(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        experiment = client.create_experiment("sq-bob/to-rename")
        gateway_denied(client.rename_experiment, experiment, "sq-ann/renamed")
        client.rename_experiment(experiment, "sq-bob/renamed")  # within one's own: fine
    with werkhub.client(people["sq-bob"]) as api:
        for body in (
            {"experiment_id": experiment, "new_name": "sq-ann/renamed"},
            {"experimentId": experiment, "newName": "sq-ann/renamed"},
            {"experiment_id": experiment, "new_name": "sq-bob/ok", "newName": "sq-ann/x"},
        ):
            refused_for_namespace(api.post(f"{AJAX}/experiments/update", json=body), "sq-ann")
        reply = api.post(
            f"{V2}/experiments/update", json={"experiment_id": experiment, "new_name": 7}
        )
        assert reply.status_code == 400 and "new_name" in reply.json()["detail"]
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        assert client.get_experiment(experiment).name == "sq-bob/renamed"
    assert not exists(werkhub, "sq-ann/renamed")


def private_mlflow(hub: Werkhub, user: str) -> httpx.Client:
    """The private MLflow server as ``user``'s own account: how experiments were created
    before the gateway knew name spaces."""
    address = json.loads((hub.state / "mlflow" / "internal.json").read_text())
    keys = GatewaySecrets.load(hub.state / "secrets")
    return httpx.Client(
        base_url=address["url"] + address["prefix"],
        auth=(user, keys.user_password(user)),
        timeout=30,
    )


def test_experiment_squatted_before_the_rule_keeps_working_but_cannot_be_restored(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    with private_mlflow(werkhub, "sq-bob") as old:
        reply = old.post("/api/2.0/mlflow/experiments/create", json={"name": "sq-ann/legacy"})
        assert reply.status_code == 200, reply.text
    experiment = reply.json()["experiment_id"]
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        assert client.get_experiment(experiment).name == "sq-ann/legacy"  # still usable
        client.delete_experiment(experiment)
        message = gateway_denied(client.restore_experiment, experiment)
        assert "'sq-ann/'" in message
    # someone without permission learns nothing about it from the gateway (MLflow refuses)
    with werkhub.client(people["sq-ann"]) as api:
        reply = api.post(f"{V2}/experiments/restore", json={"experiment_id": experiment})
    assert reply.status_code == 403 and "sq-ann/legacy" not in reply.text
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        own = client.create_experiment("sq-bob/deleted-and-back")
        client.delete_experiment(own)
        client.restore_experiment(own)  # restoring one's own: fine
        assert client.get_experiment(own).lifecycle_stage == "active"


#: one request per refused route family: (method, path below the prefix, JSON body)
DENIED_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/2.0/mlflow/users/list", None),
    ("POST", "/api/2.0/mlflow/users/create", {"username": "evil", "password": "x" * 20}),
    ("POST", "/api/3.0/mlflow/users/permissions/grant", {"username": "sq-bob"}),
    ("GET", "/api/3.0/mlflow/users/permissions/list", None),
    ("GET", "/api/3.0/mlflow/roles/list", None),
    ("POST", "/ajax-api/3.0/mlflow/roles/create", {"name": "r", "workspace": "default"}),
    ("GET", "/api/3.0/mlflow/workspaces", None),
    ("GET", "/ajax-api/3.0/mlflow/gateway/secrets/list", None),
    ("POST", "/api/3.0/mlflow/gateway/endpoints/create", {"name": "e"}),
    ("POST", "/gateway/e/mlflow/invocations", {"messages": []}),
    ("POST", "/gateway/proxy/e/v1/x", {}),
    ("POST", "/api/2.0/mlflow/webhooks", {"name": "w", "url": "http://127.0.0.1:9/"}),
    ("GET", "/ajax-api/3.0/jobs/1", None),
    ("POST", "/ajax-api/3.0/mlflow/assistant/message", {}),
    ("GET", "/api/3.0/mlflow/mcp-servers", None),
    ("POST", "/ajax-api/3.0/mlflow/demo/generate", {}),
    ("POST", "/ajax-api/3.0/mlflow/ui-telemetry", {}),
    ("GET", "/api/3.0/mlflow/scorers/list", None),
    ("POST", "/api/3.0/mlflow/prompt-optimization/jobs/search", {}),
    ("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run", {}),
    ("GET", "/api/2.0/mlflow/unified-traces", None),
    ("POST", "/api/2.0mlflow/experiments/search-datasets", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), DENIED_ROUTES, ids=lambda v: str(v)[:60])
def test_route_not_on_the_allow_list_is_refused_by_the_gateway(
    werkhub: Werkhub, people: dict[str, str], method: str, path: str, body: Any
) -> None:
    with werkhub.client(people["sq-bob"]) as api:
        reply = api.request(method, f"/services/mlflow{path}", json=body)
    assert reply.status_code == 403, reply.text
    assert reply.json()["detail"], reply.text  # the gateway's reason, not MLflow's answer


def test_unknown_and_oddly_spelt_routes_are_refused(
    werkhub: Werkhub, people: dict[str, str]
) -> None:
    with werkhub.client(people["sq-bob"]) as api:
        reply = api.get("/services/mlflow/api/2.0/mlflow/no-such-route")
        assert reply.status_code == 404 and "allow-list" in reply.json()["detail"]
        reply = api.request("OPTIONS", f"{V2}/experiments/search")
        assert reply.status_code == 404 and "allow-list" in reply.json()["detail"]
        # percent-encoding is decoded before the check, as MLflow decodes it
        reply = api.post(f"{V2}/%75sers/create", json={"username": "e", "password": "x" * 20})
        assert reply.status_code == 403 and "managed by the hub" in reply.json()["detail"]
        reply = api.post(f"{V2}/experiments/create/", json={"name": "sq-ann/slash"})
        assert reply.status_code in (403, 404)
    assert not exists(werkhub, "sq-ann/slash")
    # even hub admins get no AI gateway or webhooks through it
    with werkhub.admin() as api:
        reply = api.get("/services/mlflow/ajax-api/3.0/mlflow/gateway/secrets/list")
        assert reply.status_code == 403


def test_allowed_routes_keep_working(werkhub: Werkhub, people: dict[str, str]) -> None:
    with mlflow_as(werkhub, people["sq-bob"]) as client:
        experiment = client.create_experiment("sq-bob/allowed")
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, "loss", 0.5)
        model = client.create_logged_model(experiment, name="m")
        assert client.get_logged_model(model.model_id).name == "m"
        assert client.search_traces(locations=[experiment]) == []
    query = {
        "query": f'{{ mlflowGetRun(input: {{runId: "{run}"}}) {{ run {{ info {{ runId }} }} }} }}'
    }
    with werkhub.client(people["sq-bob"]) as api:
        reply = api.post("/services/mlflow/graphql", json=query)
        assert reply.status_code == 200 and run in reply.text, reply.text
        me = api.get(f"{V2}/users/current")
        assert me.status_code == 200 and me.json()["user"]["username"] == "sq-bob"
    with werkhub.client(people["sq-cy"]) as api:
        reply = api.get(f"{V2}/logged-models/{model.model_id}")
        assert reply.status_code == 403  # covered by MLflow's own check
        reply = api.post("/services/mlflow/graphql", json=query)
        assert run not in reply.text
