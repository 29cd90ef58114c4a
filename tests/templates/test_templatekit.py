"""werkhub_widgets.templatekit: the set-up every template notebook shares (parameters, figure
style, seeds, the torch device, the MLflow run and its results file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
