"""The plumbing every werkhub template notebook shares: one MLflow run and the time spent in
MLflow, figures shown once and logged at the end, and the results file (JSON: parameters,
metrics, timings, MLflow run) that jobs, tests and benchmarks read.

A template sets up after its imports, starts tracking, and ends it in its last cell::

    from werkhub_widgets.templatekit import parameters, set_up, start_tracking, torch_device

    started = time.perf_counter()
    rng = set_up(seed)  # figure style, the seeded random generator
    device = torch_device(device_name, cpu_threads, seed)  # templates that use PyTorch
    tracking = start_tracking("my-template", mlflow_experiment, results_path, started)
    mlflow, show, mlflow_timer = tracking.mlflow, tracking.show, tracking.timer
    params = parameters(globals())
    with mlflow_timer():
        mlflow.log_params(params)
    ...
    tracking.finish(params, metrics, registered)

Engineer templates end with a model ready to serve: an MLflow Model with a signature and an
input example, registered in the Model Registry, and the alias ``champion`` on that version
when the run meets the template's quality gates (``gates:`` in its template.yaml)::

    gate = quality_gate(metrics)  # reads template.yaml next to the notebook
    model_info = mlflow.pyfunc.log_model(name="model", python_model=..., signature=...,
                                         input_example=..., pip_requirements=pinned("torch"))
    registered = register_champion(model_info, registered_model, gate.passed, gate=str(gate))
    display(Markdown(registered.note()))

The parameters are the names the notebook annotates at its top level (the templates annotate
only their parameters cell: ``epochs: int = 10``), with the values papermill injected for a
job, less the plumbing (``mlflow_experiment``, ``results_path``). The engineer templates pick
their torch device in view, where an engineer looks for it; the courses call ``torch_device``.

The run goes to ``MLFLOW_TRACKING_URI`` (set by the workbench in every server and job; there a
plain experiment name gets the user's name as prefix); without it, to a SQLite store in
``mlruns/`` next to the results. A registered model's name gets the prefix ``<user>~`` where
``JUPYTERHUB_USER`` is set. MLflow's telemetry is off unless the environment says otherwise.
Standard library at import time: MLflow is imported (and timed) by ``start_tracking``,
IPython, Matplotlib and PyYAML, which every kernel has, when used.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

# how every template draws: readable on screen and in the HTML report
FIGURE_STYLE = {
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
# parameters that say where results go, not what the notebook computes: never logged
PLUMBING = ("mlflow_experiment", "results_path")
# what separates the owner from the rest of a name on werkhub's MLflow: experiments "ann/x",
# registered models "ann~x" (MLflow refuses "/" in model names)
EXPERIMENT_SEPARATOR, MODEL_SEPARATOR = "/", "~"
# the alias an endpoint serves: the latest version that met the template's quality gates
CHAMPION = "champion"
# no telemetry from a template run, wherever it runs (the workbench sets these too)
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
GATE_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's parameters as they stand now (after papermill injected a job's values):
    every name annotated at the notebook's top level, in its order, less ``PLUMBING``."""
    names = namespace.get("__annotations__", {})
    return {name: namespace[name] for name in names if name not in PLUMBING and name in namespace}


def set_up(seed: int) -> Any:
    """The figure style, and the notebook's random generator (``numpy.random.Generator``)."""
    import matplotlib.pyplot as plt
    import numpy as np

    plt.rcParams.update(FIGURE_STYLE)
    return np.random.default_rng(seed)


def torch_device(device_name: str, cpu_threads: int, seed: int) -> Any:
    """PyTorch seeded and limited to ``cpu_threads``; the device to train on: "auto" is CUDA
    when the server has a GPU (the booking's), else the CPU."""
    import torch

    torch.set_num_threads(cpu_threads)
    torch.manual_seed(seed)
    if device_name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_name)


def owned(name: str, separator: str) -> str:
    """``name`` in the name space of the workbench user (``JUPYTERHUB_USER``):
    ``<user><separator><name>``, unless it already names a space or there is no user."""
    owner = os.environ.get("JUPYTERHUB_USER", "")
    return f"{owner}{separator}{name}" if owner and separator not in name else name


def pinned(*distributions: str) -> list[str]:
    """``name==version`` of installed distributions (a local build tag like ``+cpu`` left
    out), for a logged model's ``pip_requirements``: no requirement inference, no index."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in distributions]


@dataclass(frozen=True)
class GateCheck:
    """The template's quality gates, checked on one run's metrics."""

    passed: bool
    checks: tuple[str, ...]

    def __str__(self) -> str:
        return "; ".join(self.checks)


def quality_gate(metrics: Mapping[str, Any], spec: str | Path = "template.yaml") -> GateCheck:
    """Check ``metrics`` against the ``gates:`` of the template's ``spec`` (the notebook's
    template.yaml: a kernel's working folder is the notebook's). Passed only when there are
    gates and every one holds; a missing metric or template.yaml fails."""
    import yaml

    path = Path(spec)
    if not path.is_file():
        return GateCheck(False, (f"no {path.name} with quality gates next to the notebook",))
    gates = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("gates") or []
    if not gates:
        return GateCheck(False, (f"{path.name} declares no quality gates",))
    checks, passed = [], True
    for gate in gates:
        metric, op, bar = gate["metric"], gate["op"], float(gate["value"])
        value = metrics.get(metric)
        met = value is not None and GATE_OPERATORS[op](float(value), bar)
        shown = "missing" if value is None else f"{float(value):.4g}"
        checks.append(f"{metric} = {shown}, needs {op} {bar:g}: {'met' if met else 'not met'}")
        passed = passed and met
    return GateCheck(passed, tuple(checks))


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, and whether it became the champion."""

    name: str
    version: str
    champion: bool
    gate: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"

    def note(self) -> str:
        """What happened, in Markdown, for the notebook and its report."""
        head = f"Registered **{self.name}** version **{self.version}**"
        if self.champion:
            return (
                f"{head}; it meets the quality gate ({self.gate}) and is now the model's "
                f"**{CHAMPION}**, the version an endpoint serves: "
                f"`mlflow.pyfunc.load_model('{self.champion_uri}')`."
            )
        return (
            f"{head} **without the alias {CHAMPION}**: the quality gate is not met "
            f"({self.gate}). An earlier {CHAMPION}, if there is one, keeps the alias; this "
            f"version is `{self.uri}`."
        )


def register_champion(
    model_info: Any, name: str, gate_passed: bool, client: Any = None, *, gate: str = ""
) -> RegisteredVersion:
    """Register a logged model (``model_info``, what ``log_model`` returned) as a new version
    of ``name`` in the user's name space (:func:`owned`), tagged with the gate's outcome
    (``gate``: what was checked, for the description), and point the alias ``champion`` at it
    when ``gate_passed``. ``client``: an ``mlflow.MlflowClient`` (default: the current
    tracking URI's). Returns the version; a failed gate leaves the alias where it was."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    name = owned(name, MODEL_SEPARATOR)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    outcome = "passed" if gate_passed else "failed"
    version = client.create_model_version(
        name,
        source=model_info.model_uri,
        run_id=model_info.run_id,
        tags={"quality_gate": outcome},
        description=f"Quality gate {outcome}: {gate}" if gate else "",
        model_id=model_info.model_id,
    )
    number = str(version.version)
    if gate_passed:
        client.set_registered_model_alias(name, CHAMPION, number)
    return RegisteredVersion(name, number, gate_passed, gate)


def local_store(results_path: str) -> tuple[str, str]:
    """No tracking server configured: a SQLite store in ./mlruns next to the results (the
    tracking URI and the artifact location)."""
    folder = (Path(results_path).resolve().parent if results_path else Path.cwd()) / "mlruns"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


class Tracking:
    """One template run: its MLflow run, what MLflow cost, its figures and its results."""

    def __init__(
        self, mlflow: ModuleType, template: str, results_path: str, started: float, import_s: float
    ) -> None:
        self.mlflow = mlflow
        self.template = template
        self.results_path = results_path
        self.started = started
        self.timings: dict[str, float] = {"mlflow_import_s": import_s, "mlflow_s": 0.0}
        self.figure_dir = Path(tempfile.mkdtemp(prefix="figures-"))
        self.experiment = ""
        self.run: Any = None
        self.results: dict[str, Any] = {}

    @contextmanager
    def timer(self) -> Iterator[None]:
        """Adds the time spent in MLflow calls to timings["mlflow_s"]."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings["mlflow_s"] += time.perf_counter() - t0

    def show(self, fig: Any, name: str) -> None:
        """Render a figure once: shown in the notebook and report, logged to MLflow at the end
        (``mlflow.log_artifacts(str(figure_dir), "figures")``)."""
        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        display(Image(filename=str(path)))

    def log_history(self, history: list[dict[str, float]]) -> None:
        """Per-epoch metrics in a single MLflow request (one HTTP call, not one per value)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, step)
            for step, row in enumerate(history)
            for key, value in row.items()
        ]
        self.mlflow.MlflowClient().log_batch(self.run.info.run_id, metrics=batch)

    def finish(
        self,
        params: dict[str, Any],
        metrics: dict[str, Any],
        registered: RegisteredVersion | None = None,
    ) -> None:
        """End the MLflow run, write the results file (when a path was given; with the model
        version the run ``registered``) and say where the run lives."""
        mlflow = self.mlflow
        with self.timer():
            mlflow.end_run()
        self.timings["total_s"] = time.perf_counter() - self.started
        self.results = {
            "template": self.template,
            "python": sys.executable,
            "parameters": params,
            "metrics": metrics,
            "timings": self.timings,
            "mlflow": {
                "run_id": self.run.info.run_id,
                "experiment_id": self.run.info.experiment_id,
                "tracking_uri": mlflow.get_tracking_uri(),
                "registered_model": asdict(registered) if registered else None,
            },
        }
        if self.results_path:
            path = Path(self.results_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.results, indent=2, default=float))
        total, in_mlflow = self.timings["total_s"], self.timings["mlflow_s"]
        print(f"MLflow run {self.run.info.run_id} in experiment '{self.experiment}'.")
        print(f"Notebook time {total:.1f} s, of which MLflow {in_mlflow:.2f} s.")


def start_tracking(
    template: str, experiment: str, results_path: str = "", started: float | None = None
) -> Tracking:
    """Import MLflow (timed: timings["mlflow_import_s"]), choose the tracking store and the
    experiment, and start the run (a job's run when the job set ``MLFLOW_RUN_ID``).
    ``started`` is when the notebook started (``time.perf_counter()``), for timings["total_s"].
    """
    warnings.filterwarnings("ignore", module="mlflow")
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    t0 = time.perf_counter()
    import mlflow

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import_s = time.perf_counter() - t0
    tracking = Tracking(
        mlflow, template, results_path, t0 if started is None else started, import_s
    )
    with tracking.timer():
        if os.environ.get("MLFLOW_TRACKING_URI"):  # set by the workbench in every server and job
            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            # experiments belong to their creator: keep each user's under their own name
            experiment = owned(experiment, EXPERIMENT_SEPARATOR)
        else:
            uri, artifacts = local_store(results_path)
            mlflow.set_tracking_uri(uri)
            if mlflow.get_experiment_by_name(experiment) is None:
                mlflow.create_experiment(experiment, artifact_location=artifacts)
        mlflow.set_experiment(experiment)
        tracking.experiment = experiment
        tracking.run = mlflow.start_run()
    return tracking
