"""The engineer templates' registered models are what an endpoint serves: in the workbench
(JUPYTERHUB_USER set) each run registers its model as ``<user>~<registered_model>``, the
version that meets the quality gate gets the alias ``champion``, and
``models:/<name>@champion`` loads with ``mlflow.pyfunc``, answers its logged input example,
and runs in MLflow's own scoring server, which refuses a payload its signature does not fit.

Each template runs once, at its smoke parameters, in a copy of its folder whose template.yaml
gates are relaxed to bars any run meets (at smoke parameters the real gates may fail; the real
gates and the runs below them are checked in test_notebooks.py).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import ENGINEER_SLUGS, Execution, execute, template
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

USER = "alice"
#: the columns each served model answers with
ANSWERS = {
    "quality-inspection": [
        *("label", "p_defect", "reject"),
        *("p_none", "p_scratch", "p_pit", "p_inclusion"),
    ],
    "federated-quality-inspection": [
        *("label", "p_defect", "reject"),
        *("p_none", "p_scratch", "p_pit", "p_inclusion"),
    ],
    "predictive-maintenance": ["rul_cycles"],
    "heat-treatment-twin": ["time_s"],
}
#: a request no template's signature fits (a column none of them has)
WRONG = {"dataframe_split": {"columns": ["temperature"], "data": [[21.5]]}}


def test_every_engineer_template_is_covered() -> None:
    assert set(ANSWERS) == set(ENGINEER_SLUGS)


def relaxed_copy(slug: str, folder: Path) -> Path:
    """The template folder with every gate's bar moved to where any value meets it."""
    shutil.copytree(template(slug).folder, folder)
    spec_file = folder / "template.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    for gate in spec["gates"]:
        gate["value"] = -math.inf if gate["op"].startswith(">") else math.inf
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def champion_run(
    mlflow_server, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Execution]:
    """``champion_run(slug)``: the template run once as ``USER``'s, in a relaxed copy."""
    cache: dict[str, Execution] = {}

    def run(slug: str) -> Execution:
        if slug not in cache:
            root = tmp_path_factory.mktemp(slug)
            params = {**template(slug).spec.smoke_parameters, "mlflow_experiment": slug}
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("JUPYTERHUB_USER", USER)
                folder = relaxed_copy(slug, root / slug)
                cache[slug] = execute(slug, params, root / "out", folder=folder)
        return cache[slug]

    return run


def champion_of(execution: Execution) -> tuple[str, Any]:
    """The registered name and ``models:/<name>@champion`` loaded with mlflow.pyfunc."""
    name = execution.results["mlflow"]["registered_model"]["name"]
    return name, mlflow.pyfunc.load_model(f"models:/{name}@champion")


@pytest.mark.parametrize("slug", ENGINEER_SLUGS)
def test_the_users_model_is_registered_with_the_champion_alias(
    slug: str, champion_run, mlflow_server
) -> None:
    execution = champion_run(slug)
    registered = execution.results["mlflow"]["registered_model"]
    default = template(slug).spec.parameters["registered_model"].default
    assert registered["name"] == f"{USER}~{default}"
    assert registered["champion"] is True
    client = MlflowClient(mlflow_server.uri)
    version = client.get_model_version_by_alias(registered["name"], "champion")
    assert str(version.version) == registered["version"]
    assert version.run_id == execution.results["mlflow"]["run_id"]
    assert version.tags["quality_gate"] == "passed"
    run = client.get_run(version.run_id)
    assert client.get_experiment(run.info.experiment_id).name == f"{USER}/{slug}"


@pytest.mark.parametrize("slug", ENGINEER_SLUGS)
def test_the_champion_predicts_on_its_input_example(slug: str, champion_run) -> None:
    _, model = champion_of(champion_run(slug))
    example = model.input_example
    assert 1 <= len(example) <= 5, "a few rows: the input example is the smoke request"
    answer = model.predict(example)
    assert list(answer.columns) == ANSWERS[slug]
    assert len(answer) == len(example)
    if slug in ("quality-inspection", "federated-quality-inspection"):
        classes = {column.removeprefix("p_") for column in ANSWERS[slug][3:]}
        assert set(answer["label"]) <= classes
        assert answer["p_defect"].between(0, 1).all()
    else:
        assert (answer[ANSWERS[slug][0]] >= 0).all()


@pytest.mark.parametrize("slug", ENGINEER_SLUGS)
def test_the_scoring_server_serves_the_champion_and_refuses_a_wrong_payload(
    slug: str, champion_run
) -> None:
    """MLflow's scoring server app (what ``mlflow models serve`` and werkhub's endpoints
    run) answers the logged serving input example and refuses a payload that misses the
    signature, as does schema enforcement in ``mlflow.pyfunc``."""
    name, model = champion_of(champion_run(slug))
    local = mlflow.artifacts.download_artifacts(f"models:/{name}@champion")
    serving_input = mlflow.models.Model.load(local).get_serving_input(local)
    assert serving_input, "the model carries a serving input example"
    with TestClient(scoring_server.init(model)) as server:
        headers = {"Content-Type": "application/json"}
        answer = server.post("/invocations", content=serving_input, headers=headers)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert predictions and set(predictions[0]) == set(ANSWERS[slug])
        refused = server.post("/invocations", json=WRONG)
        assert refused.status_code == 400
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException):
        model.predict(pd.DataFrame({"temperature": [21.5]}))
