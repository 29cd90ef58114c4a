"""MLflow's Model Registry through the gateway: per-user models, name spaces, sharing.

A real ``werkhub up`` (hub, gateway, private MLflow with the basic-auth app); callers are
the real MLflow client and plain HTTP with nothing but a hub token. Registered models
belong to their creator, names ``<user>~...`` / ``<group>~...`` to that user or group,
and the owner shares a model with hub groups through the werkhub service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.hub.test_mlflow_auth import denied, mlflow_as
from tests.support.hub import Werkhub

pytestmark = pytest.mark.hub

V2 = "/services/mlflow/api/2.0/mlflow"
AJAX = "/services/mlflow/ajax-api/2.0/mlflow"
MODELS = "/services/werkhub/api/models"
TEAM = "rg-team"
MODEL = "rg-ann~classifier"


@pytest.fixture(scope="module")
def people(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in ("rg-ann", "rg-ben", "rg-cy")}
    werkhub.add_to_group(TEAM, ["rg-ben"])
    return tokens


def register(client: MlflowClient, name: str, folder: Path) -> str:
    """A run with a small model folder, registered as version 1 of ``name``; its run id."""
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "weights.txt").write_text("0.7 0.3\n")
    experiment = client.create_experiment(f"{name.replace('~', '-')}-training")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(folder / "model"), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name, description="first cut")
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    assert version.version == "1"
    return run.info.run_id


@pytest.fixture(scope="module")
def ann_model(
    werkhub: Werkhub, people: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    with mlflow_as(werkhub, people["rg-ann"]) as client:
        register(client, MODEL, tmp_path_factory.mktemp("ann-model"))
        client.set_registered_model_alias(MODEL, "champion", "1")
    return MODEL


def gateway_denied(call: Any, *args: Any) -> str:
    with pytest.raises(MlflowException) as info:
        call(*args)
    assert info.value.error_code == "PERMISSION_DENIED", str(info.value)[:300]
    return str(info.value)


def names_seen(client: MlflowClient) -> set[str]:
    return {m.name for m in client.search_registered_models()}


def test_owner_registers_reads_and_loads_by_alias(
    werkhub: Werkhub, people: dict[str, str], ann_model: str, tmp_path: Path
) -> None:
    with mlflow_as(werkhub, people["rg-ann"]) as client:
        model = client.get_registered_model(ann_model)
        assert model.description == "first cut"
        assert model.aliases == {"champion": "1"}
        assert client.get_model_version_by_alias(ann_model, "champion").version == "1"
        assert ann_model in names_seen(client)
        # the '~' name works in model URIs (by version and by alias)
        for uri in (f"models:/{ann_model}/1", f"models:/{ann_model}@champion"):
            local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / uri[-1]))
            assert (Path(local) / "weights.txt").read_text() == "0.7 0.3\n"


def test_stranger_can_neither_read_nor_change_it(
    werkhub: Werkhub, people: dict[str, str], ann_model: str
) -> None:
    with mlflow_as(werkhub, people["rg-cy"]) as client:
        denied(client.get_registered_model, ann_model)
        denied(client.get_model_version, ann_model, "1")
        denied(client.get_model_version_by_alias, ann_model, "champion")
        denied(client.update_registered_model, ann_model, "mine now")
        denied(client.set_registered_model_alias, ann_model, "champion", "1")
        denied(client.delete_registered_model_alias, ann_model, "champion")
        denied(client.delete_model_version, ann_model, "1")
        denied(client.delete_registered_model, ann_model)
        assert ann_model not in names_seen(client)
        assert not [v for v in client.search_model_versions() if v.name == ann_model]
    with werkhub.client(people["rg-cy"]) as api:
        reply = api.get(f"{V2}/registered-models/get", params={"name": ann_model})
        assert reply.status_code == 403
    with mlflow_as(werkhub, people["rg-ann"]) as client:
        assert client.get_registered_model(ann_model).aliases == {"champion": "1"}


def test_name_spaces_of_users_and_groups(werkhub: Werkhub, people: dict[str, str]) -> None:
    with mlflow_as(werkhub, people["rg-cy"]) as client:
        message = gateway_denied(client.create_registered_model, "rg-ann~stolen")
        assert "belong to the user or group 'rg-ann'" in message and "'rg-cy~...'" in message
        gateway_denied(client.create_registered_model, f"{TEAM}~detector")  # not a member
        # spelt the ways a person reads as rg-ann (case, spaces, full-width tilde)
        for name in ("RG-Ann~x", " rg-ann ~x", "rg-ann\uff5ex"):
            gateway_denied(client.create_registered_model, name)
        client.create_registered_model("rg-cy~own")
        client.create_registered_model("rg-free-name")  # no '~': anyone's
        message = gateway_denied(client.rename_registered_model, "rg-cy~own", "rg-ann~own")
        assert "'rg-ann~'" in message
        client.rename_registered_model("rg-cy~own", "rg-cy~renamed")
        assert client.get_registered_model("rg-cy~renamed").name == "rg-cy~renamed"
    with werkhub.client(people["rg-cy"]) as api:
        for base in (V2, AJAX):
            reply = api.post(f"{base}/registered-models/create", json={"name": "rg-ann~y"})
            assert reply.status_code == 403 and "belong to" in reply.json()["detail"]
        reply = api.post(
            f"{V2}/registered-models/rename", json={"name": "rg-cy~renamed", "newName": "rg-ann~z"}
        )
        assert reply.status_code == 403, reply.text
        reply = api.post(f"{V2}/registered-models/create", json={"name": 7})
        assert reply.status_code == 400 and "string" in reply.json()["detail"]
        reply = api.post(
            f"{V2}/registered-models/create",
            content=b"not json",
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 400
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        assert client.create_registered_model(f"{TEAM}~detector").name == f"{TEAM}~detector"
    with mlflow_as(werkhub, werkhub.admin_token) as client:
        client.create_registered_model("rg-ann~by-admin")  # admins may name anything
    with werkhub.admin() as api:
        for name in ("rg-ann~stolen", "RG-Ann~x", "rg-ann~y", "rg-ann~z"):
            found = api.get(f"{V2}/registered-models/get", params={"name": name})
            assert found.status_code == 404, name


def test_share_with_group_read_then_edit_then_unshare(
    werkhub: Werkhub, people: dict[str, str], ann_model: str
) -> None:
    url = f"{MODELS}/{ann_model}/share"
    with werkhub.client(people["rg-ben"]) as ben:
        reply = ben.post(url, json={"group": TEAM})  # not his, cannot see it
        assert reply.status_code == 404, reply.text
        assert ben.get(f"{MODELS}/{ann_model}/shares").status_code == 404
    with werkhub.client(people["rg-ann"]) as ann:
        bad = ann.post(url, json={"group": "no-such-group"})
        assert bad.status_code == 422 and "no-such-group" in bad.json()["detail"]
        bad = ann.post(url, json={"group": TEAM, "permission": "MANAGE"})
        assert bad.status_code == 422 and "permission" in bad.json()["detail"]
        bad = ann.post(f"{MODELS}/a:b/share", json={"group": TEAM})
        assert bad.status_code == 422 and "'/' and ':'" in bad.json()["detail"]
        bad = ann.post(f"{MODELS}/%20/share", json={"group": TEAM})
        assert bad.status_code == 422 and "blank" in bad.json()["detail"]
        gone = ann.post(f"{MODELS}/rg-ann~nothing/share", json={"group": TEAM})
        assert gone.status_code == 404
        reply = ann.post(url, json={"group": TEAM, "permission": "READ"})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"name": ann_model, "shares": {TEAM: "READ"}}
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        assert client.get_registered_model(ann_model).description == "first cut"
        assert client.get_model_version_by_alias(ann_model, "champion").version == "1"
        assert ann_model in names_seen(client)
        denied(client.update_registered_model, ann_model, "ben was here")
        denied(client.set_registered_model_alias, ann_model, "challenger", "1")
        denied(client.delete_registered_model, ann_model)
    with werkhub.client(people["rg-ben"]) as ben:
        reply = ben.post(url, json={"group": TEAM, "permission": "EDIT"})
        assert reply.status_code == 403 and "owner" in reply.json()["detail"]
    with mlflow_as(werkhub, people["rg-cy"]) as client:
        denied(client.get_registered_model, ann_model)  # not in the group

    with werkhub.client(people["rg-ann"]) as ann:
        reply = ann.post(url, json={"group": TEAM, "permission": "EDIT"})
        assert reply.json()["shares"] == {TEAM: "EDIT"}
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        client.update_registered_model(ann_model, "tuned by ben")
        client.set_registered_model_alias(ann_model, "challenger", "1")
        assert client.get_model_version_by_alias(ann_model, "challenger").version == "1"
        # MLflow's rule: removing an alias (like deleting) needs MANAGE, EDIT is not enough
        denied(client.delete_registered_model_alias, ann_model, "challenger")
        denied(client.delete_registered_model, ann_model)

    with werkhub.client(people["rg-ann"]) as ann:
        reply = ann.delete(f"{url}/{TEAM}")
        assert reply.status_code == 200 and reply.json()["shares"] == {}
        again = ann.delete(f"{url}/{TEAM}")
        assert again.status_code == 404 and TEAM in again.json()["detail"]
        listed = ann.get(f"{MODELS}/{ann_model}/shares")
        assert listed.status_code == 200 and listed.json() == {"name": ann_model, "shares": {}}
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        denied(client.get_registered_model, ann_model)
        assert ann_model not in names_seen(client)


def test_shares_follow_rename_and_go_with_delete(
    werkhub: Werkhub, people: dict[str, str], tmp_path: Path
) -> None:
    first, second, third = "rg-surrogate-v1", "rg-ann~surrogate", "rg-surrogate-last"
    with mlflow_as(werkhub, people["rg-ann"]) as client:
        register(client, first, tmp_path)
    with werkhub.client(people["rg-ann"]) as ann:
        reply = ann.post(f"{MODELS}/{first}/share", json={"group": TEAM})
        assert reply.status_code == 200, reply.text
    with mlflow_as(werkhub, people["rg-ann"]) as client:
        client.rename_registered_model(first, second)
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        assert client.get_registered_model(second).name == second
        assert client.get_model_version(second, "1").version == "1"
    with werkhub.client(people["rg-ann"]) as ann:
        assert ann.get(f"{MODELS}/{second}/shares").json()["shares"] == {TEAM: "READ"}
    # the old (free) name taken by someone else: the group's share did not stay behind
    with mlflow_as(werkhub, people["rg-cy"]) as client:
        client.create_registered_model(first, description="cy's own")
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        denied(client.get_registered_model, first)
    # deleted: a new model of the freed name is not shared
    with mlflow_as(werkhub, people["rg-ann"]) as client:
        client.rename_registered_model(second, third)
        client.delete_registered_model(third)
    with mlflow_as(werkhub, people["rg-cy"]) as client:
        client.create_registered_model(third, description="cy's own")
    with mlflow_as(werkhub, people["rg-ben"]) as client:
        denied(client.get_registered_model, third)
        assert not {first, third} & names_seen(client)
    with werkhub.client(people["rg-cy"]) as cy:
        listed = cy.get(f"{MODELS}/{third}/shares")
        assert listed.status_code == 200 and listed.json()["shares"] == {}


def test_admin_sees_every_model_and_may_share_it(
    werkhub: Werkhub, people: dict[str, str], ann_model: str
) -> None:
    with mlflow_as(werkhub, werkhub.admin_token) as client:
        assert ann_model in names_seen(client)
    with werkhub.admin() as api:
        reply = api.get(f"{MODELS}/{ann_model}/shares")
        assert reply.status_code == 200, reply.text
    with httpx.Client(base_url=werkhub.url, timeout=30) as anonymous:
        assert anonymous.get(f"{MODELS}/{ann_model}/shares").status_code in (401, 403)
