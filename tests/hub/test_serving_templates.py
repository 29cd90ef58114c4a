"""Each engineer template's champion, served: the template runs as its owner would run it
in the workbench (MLflow through the hub's gateway with the owner's token), registers
``<owner>~<model>`` with the alias champion, and the endpoint deployed from it answers its
registered input example through the hub for the owner, an endpoint token and a member of
the group it is shared with; a stranger gets 404.

The templates run at their smoke parameters in a copy whose quality gates any run meets
(the real gates and their runs are checked in tests/templates)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import papermill
import pytest
import yaml

from tests.support.hub import ROOT, Werkhub, running_werkhub
from tests.support.mlflow_env import mlflow_env
from tests.support.serving import wait_state

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
OWNER, MEMBER, STRANGER = "st-ann", "st-ben", "st-cy"
TEAM = "st-line"
SLUGS = ("quality-inspection", "predictive-maintenance", "heat-treatment-twin")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    extra = {"serving": {"check_seconds": 0.5}}
    with running_werkhub(tmp_path_factory.mktemp("serving-templates"), extra) as werkhub:
        yield werkhub


@pytest.fixture(scope="module")
def people(hub: Werkhub) -> dict[str, str]:
    tokens = {name: hub.create_user(name) for name in (OWNER, MEMBER, STRANGER)}
    hub.add_to_group(TEAM, [MEMBER])
    return tokens


def run_template(slug: str, hub: Werkhub, token: str, root: Path) -> dict[str, Any]:
    """The template as the owner's server runs it; its results file."""
    folder = root / slug
    shutil.copytree(ROOT / "templates" / slug, folder)
    spec_file = folder / "template.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    for gate in spec["gates"]:
        gate["value"] = -math.inf if gate["op"].startswith(">") else math.inf
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    results = root / f"{slug}.json"
    params = {**spec["smoke_parameters"], "results_path": str(results)}
    with mlflow_env(hub.url, token, JUPYTERHUB_USER=OWNER):
        papermill.execute_notebook(
            str(folder / spec["notebook"]),
            str(root / f"{slug}.ipynb"),
            parameters=params,
            kernel_name="python3",
            cwd=str(folder),
            progress_bar=False,
            execution_timeout=600,
        )
    return json.loads(results.read_text())


def call(hub: Werkhub, token: str, name: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/endpoints/{OWNER}/{name}/invocations",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=120,
    )


@pytest.mark.parametrize("slug", SLUGS)
def test_the_templates_champion_is_served_to_whom_it_may_concern(
    slug: str, hub: Werkhub, people: dict[str, str], tmp_path: Path
) -> None:
    results = run_template(slug, hub, people[OWNER], tmp_path)
    registered = results["mlflow"]["registered_model"]
    assert registered["name"].startswith(f"{OWNER}~") and registered["champion"] is True
    name = slug.split("-")[0][:12] + "-ep"
    with hub.client(people[OWNER]) as api:
        reply = api.post(
            f"{API}/endpoints",
            json={"name": name, "model": registered["name"], "groups": [TEAM]},
        )
        assert reply.status_code == 201, reply.text
        ready = wait_state(api, name, ("ready",), timeout=240)
        assert ready["serving_version"] == registered["version"]
        example = api.get(f"{API}/endpoints/{name}/example")
        assert example.status_code == 200, example.text
        body = example.content
        owner = call(hub, people[OWNER], name, body)
        assert owner.status_code == 200, owner.text
        rows = owner.json()["predictions"]
        assert len(rows) >= 1
        token = api.post(f"{API}/endpoints/{name}/tokens", json={"note": "line PC"}).json()
        machine = call(hub, token["token"], name, body)
        assert machine.status_code == 200 and machine.json() == owner.json()
        assert call(hub, people[MEMBER], name, body).status_code == 200
        assert call(hub, people[STRANGER], name, body).status_code == 404
        assert api.delete(f"{API}/endpoints/{name}").status_code == 204
