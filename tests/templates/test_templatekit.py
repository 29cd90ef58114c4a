"""werkhub_widgets.templatekit: the set-up every template notebook shares (parameters, figure
style, seeds, the torch device, the MLflow run and its results file, quality gates and
registered models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest

from werkhub_widgets import templatekit

PARAMETERS_CELL = """
epochs: int = 10
noise: float = 0.04  # camera noise
data_dir: str = ""
mlflow_experiment: str = "demo"
results_path: str = ""
"""


def _notebook(*cells: str) -> dict:
    """A module namespace run cell by cell, as a kernel runs a notebook."""
    namespace: dict = {}
    for cell in cells:
        exec(compile(cell, "<cell>", "exec"), namespace)
    return namespace


def test_parameters_are_the_annotated_names_with_the_values_papermill_injected() -> None:
    injected = 'epochs = 3\ndata_dir = "my_parts"\n'  # papermill's injected-parameters cell
    namespace = _notebook(PARAMETERS_CELL, injected, "import math\nscratch = 1.5\n")
    params = templatekit.parameters(namespace)
    assert params == {"epochs": 3, "noise": 0.04, "data_dir": "my_parts"}
    assert list(params) == ["epochs", "noise", "data_dir"]  # the parameters cell's order


def test_set_up_seeds_the_generator_and_sets_the_figure_style() -> None:
    first, second = templatekit.set_up(7), templatekit.set_up(7)
    assert first.integers(0, 10**9, 5).tolist() == second.integers(0, 10**9, 5).tolist()
    assert templatekit.set_up(8).integers(0, 10**9) != templatekit.set_up(7).integers(0, 10**9)
    for key, value in templatekit.FIGURE_STYLE.items():
        assert plt.rcParams[key] == value


def test_torch_device_seeds_and_limits_torch() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert templatekit.torch_device("cpu", 1, 3).type == "cpu"
        assert torch.get_num_threads() == 1
        a = torch.rand(3)
        templatekit.torch_device("auto", 1, 3)
        assert torch.equal(a, torch.rand(3))  # seeded again: the same numbers
        auto = templatekit.torch_device("auto", 1, 3).type
        assert auto == ("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        torch.set_num_threads(before)


RUN = """
import sys, time
from werkhub_widgets import templatekit

namespace = {}
for cell in (sys.argv[2], "epochs = 2"):
    exec(compile(cell, "<cell>", "exec"), namespace)
tracking = templatekit.start_tracking("demo", "demo", sys.argv[1], time.perf_counter())
params = templatekit.parameters(namespace)
with tracking.timer():
    tracking.mlflow.log_params(params)
tracking.finish(params, {"accuracy": 0.9})
"""


def test_a_run_logs_its_parameters_and_writes_the_results_file(tmp_path: Path) -> None:
    """In a process of its own, as in a kernel: MLflow's module state stays out of this one."""
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "JUPYTERHUB_"))}
    results = tmp_path / "out" / "results.json"
    subprocess.run(
        [sys.executable, "-c", RUN, str(results), PARAMETERS_CELL],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    written = json.loads(results.read_text())
    assert written["parameters"] == {"epochs": 2, "noise": 0.04, "data_dir": ""}
    assert written["metrics"] == {"accuracy": 0.9}
    assert written["timings"]["total_s"] >= written["timings"]["mlflow_s"] > 0
    uri = written["mlflow"]["tracking_uri"]
    assert uri == f"sqlite:///{tmp_path / 'out' / 'mlruns' / 'mlflow.db'}"
    run = MlflowClient(tracking_uri=uri).get_run(written["mlflow"]["run_id"])
    assert run.data.params == {"epochs": "2", "noise": "0.04", "data_dir": ""}
    assert run.info.status == "FINISHED"


def test_names_go_into_the_users_name_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """werkhub's MLflow gives each user the names "<user>/..." (experiments) and "<user>~..."
    (registered models); a name that already names a space is kept."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert templatekit.owned("classifier", templatekit.MODEL_SEPARATOR) == "alice~classifier"
    assert templatekit.owned("team~classifier", templatekit.MODEL_SEPARATOR) == "team~classifier"
    assert templatekit.owned("runs", templatekit.EXPERIMENT_SEPARATOR) == "alice/runs"
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert templatekit.owned("classifier", templatekit.MODEL_SEPARATOR) == "classifier"


def test_pinned_requirements_are_the_installed_versions() -> None:
    import numpy

    assert templatekit.pinned("numpy") == [f"numpy=={numpy.__version__}"]
    torch = pytest.importorskip("torch")
    assert templatekit.pinned("torch") == [f"torch=={torch.__version__.split('+')[0]}"]


GATES = """
title: Demo
gates:
  - {metric: f1, op: ">=", value: 0.9}
  - {metric: error, op: "<", value: 0.05}
"""


def test_quality_gate_checks_the_gates_of_template_yaml(tmp_path: Path) -> None:
    spec = tmp_path / "template.yaml"
    spec.write_text(GATES)
    met = templatekit.quality_gate({"f1": 0.93, "error": 0.01, "other": 5}, spec)
    assert met.passed
    assert str(met) == "f1 = 0.93, needs >= 0.9: met; error = 0.01, needs < 0.05: met"
    low = templatekit.quality_gate({"f1": 0.89, "error": 0.01}, spec)
    assert not low.passed and low.checks[0] == "f1 = 0.89, needs >= 0.9: not met"
    missing = templatekit.quality_gate({"f1": 0.95}, spec)
    assert not missing.passed and "error = missing" in str(missing)
    # no gates to meet: never a champion
    assert not templatekit.quality_gate({"f1": 1.0}, tmp_path / "absent.yaml").passed
    spec.write_text("title: Demo\n")
    assert not templatekit.quality_gate({"f1": 1.0}, spec).passed


def test_gate_operators_are_the_catalogs() -> None:
    """The notebook side reads the gates the hub side validates (werkhub.images.templates),
    and decides them the same way."""
    from typing import get_args

    from werkhub.images.templates import Gate

    operators = templatekit.GATE_OPERATORS
    assert set(get_args(Gate.model_fields["op"].annotation)) == set(operators)
    for op, decide in operators.items():
        for value in (0.5, 0.9, 1.5):
            assert decide(value, 0.9) == Gate(metric="m", op=op, value=0.9).passes(value)


class FakeRegistry:
    """What register_champion asks of an MlflowClient, recorded."""

    def __init__(self, exists: bool = False, refuse: bool = False) -> None:
        self.exists, self.refuse = exists, refuse
        self.calls: list[tuple] = []

    def create_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_ALREADY_EXISTS

        self.calls.append(("create", name))
        if self.refuse:
            raise MlflowException("not your name space", error_code=PERMISSION_DENIED)
        if self.exists:
            raise MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)

    def create_model_version(self, name: str, **fields: object) -> object:
        self.calls.append(("version", name, fields))
        return SimpleNamespace(version=3)  # SQLite stores answer an int

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.calls.append(("alias", name, alias, version))


MODEL_INFO = SimpleNamespace(model_uri="models:/m-1", run_id="r1", model_id="m-1")


def test_register_champion_sets_the_alias_only_when_the_gate_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    registry = FakeRegistry()
    passed = templatekit.register_champion(MODEL_INFO, "clf", True, registry, gate="f1: met")
    assert passed == templatekit.RegisteredVersion("alice~clf", "3", True, "f1: met")
    assert registry.calls[-1] == ("alias", "alice~clf", "champion", "3")
    (_, name, fields) = registry.calls[1]
    assert name == "alice~clf" and fields["source"] == "models:/m-1"
    assert fields["run_id"] == "r1" and fields["model_id"] == "m-1"
    assert fields["tags"] == {"quality_gate": "passed"}
    assert "champion" in passed.note() and "models:/alice~clf@champion" in passed.note()

    registry = FakeRegistry(exists=True)  # a later run: a new version of the same model
    failed = templatekit.register_champion(MODEL_INFO, "clf", False, registry, gate="f1: low")
    assert failed.version == "3" and not failed.champion
    assert [call[0] for call in registry.calls] == ["create", "version"]  # no alias
    assert registry.calls[1][2]["tags"] == {"quality_gate": "failed"}
    assert "without the alias champion" in failed.note() and "f1: low" in failed.note()
    assert failed.uri == "models:/alice~clf/3"

    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="not your name space"):
        templatekit.register_champion(MODEL_INFO, "team~clf", True, FakeRegistry(refuse=True))


REGISTER = """
import os, sys, time

import pandas as pd
from werkhub_widgets import templatekit

tracking = templatekit.start_tracking("demo", "demo", sys.argv[1], time.perf_counter())
mlflow = tracking.mlflow
assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # nothing leaves the machine


class Double(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input * 2


example = pd.DataFrame({"x": [1.0, 2.0]})
info = mlflow.pyfunc.log_model(
    name="model",
    python_model=Double(),
    signature=mlflow.models.infer_signature(example, example * 2),
    input_example=example,
    pip_requirements=templatekit.pinned("pandas"),
)
first = templatekit.register_champion(info, "doubler", True, gate="x: met")
second = templatekit.register_champion(info, "doubler", False, gate="x: not met")
tracking.finish({}, {}, second)
"""


def test_registered_versions_on_a_real_store(tmp_path: Path) -> None:
    """A local run (SQLite store, telemetry off) as user alice: two versions of
    "alice~doubler", the alias on the one that passed, and the results file names the run's
    version."""
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "JUPYTERHUB_"))}
    results = tmp_path / "out" / "results.json"
    subprocess.run(
        [sys.executable, "-c", REGISTER, str(results)],
        env={**env, "JUPYTERHUB_USER": "alice"},
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    written = json.loads(results.read_text())
    registered = written["mlflow"]["registered_model"]
    assert registered == {
        "name": "alice~doubler",
        "version": "2",
        "champion": False,
        "gate": "x: not met",
    }
    client = MlflowClient(tracking_uri=written["mlflow"]["tracking_uri"])
    assert str(client.get_model_version_by_alias("alice~doubler", "champion").version) == "1"
    second = client.get_model_version("alice~doubler", "2")
    assert second.tags == {"quality_gate": "failed"}
    assert second.description == "Quality gate failed: x: not met"
    assert second.run_id == written["mlflow"]["run_id"]
