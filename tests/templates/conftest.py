"""Fixtures for the starter templates: a real MLflow server and cached notebook executions."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
sys.path.insert(0, str(ROOT / "hub"))

from tests.support.net import free_port  # noqa: E402
from werkhub.images.templates import Template, discover_templates  # noqa: E402

ALL_TEMPLATES = discover_templates(TEMPLATES)
SLUGS = [t.slug for t in ALL_TEMPLATES]
ENGINEER_SLUGS = [t.slug for t in ALL_TEMPLATES if t.spec.audience == "engineer"]
COURSE_SLUGS = [t.slug for t in ALL_TEMPLATES if t.spec.audience == "student"]
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def template(slug: str) -> Template:
    return next(t for t in ALL_TEMPLATES if t.slug == slug)


def load_checks(slug: str) -> ModuleType:
    """Import a course's checks.py (each course has its own ``checks`` module; all share
    ``werkhub_widgets.coursekit``)."""
    folder = template(slug).folder
    sys.modules.pop("checks", None)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("checks")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("checks", None)


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1 with SQLite and local artifacts; notebooks find it through
    MLFLOW_TRACKING_URI, which this fixture sets for the whole session."""
    state = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = state / "server.log"
    env = {**os.environ, **QUIET_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}"),
        *("--artifacts-destination", str(state / "artifacts")),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {**QUIET_ENV, "MLFLOW_TRACKING_URI": uri}.items():
                patch.setenv(key, value)
            yield MlflowServer(uri, process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn worker, nothing else
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Execution:
    """One papermill run of a template notebook."""

    slug: str
    variant: str
    parameters: dict[str, Any]
    notebook: Path
    results: dict[str, Any]
    seconds: float


def execute(
    slug: str,
    parameters: dict[str, Any],
    out_dir: Path,
    notebook: Path | None = None,
    folder: Path | None = None,
) -> Execution:
    """Run a template's notebook (or ``notebook`` in its folder's context) with papermill, in
    a real ipykernel of this interpreter; ``folder``: a copy of the template folder to run in
    instead."""
    import papermill

    spec = template(slug)
    folder = folder or spec.folder
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    params = spec.resolve_parameters({**parameters, "results_path": str(results_path)})
    output = out_dir / "executed.ipynb"
    start = time.perf_counter()
    papermill.execute_notebook(
        str(notebook or folder / spec.spec.notebook),
        str(output),
        parameters=params,
        kernel_name="python3",
        cwd=str(folder),
        progress_bar=False,
        # a cell that never answers fails the test instead of hanging the suite
        execution_timeout=600,
    )
    seconds = time.perf_counter() - start
    results = json.loads(results_path.read_text())
    return Execution(slug, "", params, output, results, seconds)


@pytest.fixture(scope="session")
def run_notebook(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Execution]:
    """``run_notebook(slug, variant)``: executes once per session and caches the result.

    Variants: ``default`` (template defaults), ``smoke`` (the template's smoke_parameters) and
    ``own-data`` (engineer templates: smoke parameters, data from files in the user's format,
    the optional code paths switched on). The engineer templates' variants other than
    ``default`` register their models under names of their own (``test-<slug>-<variant>``).
    """
    cache: dict[tuple[str, str], Execution] = {}
    root = tmp_path_factory.mktemp("runs")

    def run(slug: str, variant: str) -> Execution:
        if (slug, variant) not in cache:
            out_dir = root / f"{slug}-{variant}"
            params = {"mlflow_experiment": f"test-{slug}-{variant}"}
            if variant in ("smoke", "own-data"):
                params |= template(slug).spec.smoke_parameters
                if "registered_model" in template(slug).spec.parameters:
                    params["registered_model"] = f"test-{slug}-{variant}"
            if variant == "own-data":
                params |= own_data(slug, out_dir / "data")
            execution = execute(slug, params, out_dir)
            execution.variant = variant
            cache[(slug, variant)] = execution
        return cache[(slug, variant)]

    return run


def own_data(slug: str, folder: Path) -> dict[str, Any]:
    """Write data in the format a user would bring, and the parameters that point at it."""
    folder.mkdir(parents=True, exist_ok=True)
    engineer = TEMPLATES / slug
    sys.path.insert(0, str(engineer))
    try:
        if slug == "quality-inspection":
            import surfaces

            images, labels = surfaces.make_images(160, 40, seed=7)  # other size: resized on load
            surfaces.save_image_folder(images, labels, folder / "images")
            return {"data_dir": str(folder / "images")}
        if slug == "predictive-maintenance":
            import fleet

            histories = fleet.simulate_fleet(30, seed=7).drop(columns=["wear", "rul"])
            histories.to_parquet(folder / "histories.parquet")
            return {"data_path": str(folder / "histories.parquet"), "model_kind": "mlp"}
        if slug == "federated-quality-inspection":
            from fedinspect import data

            for party in data.PARTIES:  # image folders, as a party would bring them
                images, labels = data.make_party(party, 60, 40, seed=7)  # other size: resized
                data.surfaces.save_image_folder(images, labels, folder / "parties" / party)
            images, labels = data.make_test_set(80, 32, seed=7)
            data.save_party(folder / "parties" / "test", images, labels)
            return {"data_dir": str(folder / "parties")}
        if slug == "heat-treatment-twin":
            import heat
            import pandas as pd

            settings = heat.sample_parameters(6, seed=7)
            trials = pd.DataFrame(settings)
            trials["measured_time_s"] = heat.solve(settings).times_s * 1.02  # a 2 % slower plant
            trials.to_csv(folder / "trials.csv", index=False)
            return {"data_path": str(folder / "trials.csv")}
    finally:
        sys.path.remove(str(engineer))
        sys.modules.pop("fedinspect", None)
    raise ValueError(f"no own-data variant for {slug}")
