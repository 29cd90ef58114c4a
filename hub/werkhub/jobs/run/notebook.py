"""One job run: papermill in a real kernel, a self-contained HTML report, one MLflow run.

``execute(req)`` never raises for a notebook's own failure: it returns a :class:`RunOutcome`
with ``status`` succeeded, failed or timed_out, the error and the failing cell, and keeps
``out_dir/output.ipynb`` and ``out_dir/report.html`` in every case.

MLflow: the run is created before the kernel starts and handed to it as ``MLFLOW_RUN_ID``,
so the notebook's own ``mlflow.start_run()`` continues the job's run. MLflow refuses to
continue a run of another experiment, so a notebook that declares a ``mlflow_experiment``
parameter (every werkhub template does) gets the job's experiment as that parameter unless
the job sets it; then the job's run is created in that experiment. Identity and server come
from ``req.env`` (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN``); without a tracking URI
the run is not tracked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from werkhub.jobs.mlflow_run import JobTracker
from werkhub.jobs.params import parameters_of
from werkhub.jobs.report import ReportInfo, write_report

log = logging.getLogger("werkhub.jobs.run.notebook")

Status = Literal["succeeded", "failed", "timed_out"]

#: MLflow's HTTP retries default to minutes of back-off; a job should learn quickly that
#: its tracking server is away (refused connections: five tries in 7.5 s) yet ride out a
#: server slowed by a busy machine (each try waits 20 s for its answer); the request's
#: env may still override these
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


class RunRequest(BaseModel):
    """Everything one run needs, JSON-serialisable (the scheduler writes it to a file)."""

    model_config = ConfigDict(extra="forbid")

    run_id: int | str
    job_id: int | str
    job_name: str
    owner: str
    notebook: Path = Field(description="absolute path of the notebook to run")
    cwd: Path = Field(description="working folder of the kernel (usually the notebook's)")
    out_dir: Path = Field(description="output.ipynb, report.html and result.json go here")
    parameters: dict[str, Any] = Field(default_factory=dict)
    kernel_name: str = "python3"
    cell_timeout_s: int = 600
    deadline_s: int = 3600
    title: str | None = None
    hide_code: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    mlflow_experiment: str = "werkhub-jobs"
    tz: str = "Europe/Berlin"
    notebook_label: str | None = Field(
        default=None, description="the notebook as the owner knows it (path in the home)"
    )


class RunOutcome(BaseModel):
    status: Status
    error: str | None = None
    failed_cell: int | None = Field(default=None, description="cell index in output.ipynb")
    timings: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_error: str | None = None
    started: datetime
    finished: datetime
    output_notebook: str | None = None
    report: str | None = None


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ (the kernel inherits them) for the duration; restored."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def notebook_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def effective_parameters(req: RunRequest, notebook_json: dict[str, Any]) -> tuple[dict, str]:
    """The parameters papermill injects, and the MLflow experiment of the run."""
    params = dict(req.parameters)
    experiment = req.mlflow_experiment
    if "mlflow_experiment" in parameters_of(notebook_json):
        if isinstance(params.get("mlflow_experiment"), str) and params["mlflow_experiment"]:
            experiment = params["mlflow_experiment"]
        else:
            params["mlflow_experiment"] = experiment
    return params, experiment


def run_tags(req: RunRequest, sha: str) -> dict[str, str]:
    """The tags of a job run's MLflow run."""
    notebook = req.notebook_label or str(req.notebook)
    return {
        "werkhub.job_id": str(req.job_id),
        "werkhub.run_id": str(req.run_id),
        "werkhub.job_name": req.job_name,
        "werkhub.owner": req.owner,
        "werkhub.notebook": notebook,
        "werkhub.notebook_sha256": sha,
        "mlflow.source.name": notebook,
        "mlflow.user": req.owner,
    }


def execute(req: RunRequest) -> RunOutcome:
    """Run ``req`` to the end (see the module notes); never raises for notebook errors."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    out_dir = Path(req.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / "output.ipynb"
    report = out_dir / "report.html"
    timings: dict[str, float] = {}
    env = {**MLFLOW_HTTP_DEFAULTS, **req.env}
    env.update({"WERKHUB_JOB_ID": str(req.job_id), "WERKHUB_RUN_ID": str(req.run_id)})
    notebook_json = json.loads(Path(req.notebook).read_text())
    params, experiment = effective_parameters(req, notebook_json)
    sha = notebook_sha256(Path(req.notebook))

    with _environment(env):
        tracker = None
        mlflow_s = 0.0
        if env.get("MLFLOW_TRACKING_URI"):
            tracker = JobTracker(experiment, run_tags(req, sha))
            mlflow_s = tracker.start(params, run_name=f"{req.job_name} #{req.run_id}")
        kernel_env = {"MLFLOW_RUN_ID": tracker.run_id} if tracker and tracker.run_id else {}
        t1 = time.perf_counter()
        with _environment(kernel_env):
            status, error, failed_cell = _papermill(req, params, output)
        timings["papermill_s"] = time.perf_counter() - t1
        finished = datetime.now(UTC)

        t2 = time.perf_counter()
        info = ReportInfo(
            title=req.title or req.job_name,
            job_name=req.job_name,
            owner=req.owner,
            run_id=str(req.run_id),
            notebook=req.notebook_label or Path(req.notebook).name,
            parameters=params,
            started=started,
            duration_s=(finished - started).total_seconds(),
            status=status,
            error=error,
            failed_cell=failed_cell,
            tz=req.tz,
            mlflow_run_id=tracker.run_id if tracker else None,
        )
        source = output if output.exists() else Path(req.notebook)
        write_report(source, report, info, hide_code=req.hide_code, resources_path=req.cwd)
        timings["report_s"] = time.perf_counter() - t2

        if tracker:
            mlflow_s += tracker.finish(status, [output, report])
    timings["mlflow_s"] = mlflow_s
    timings["total_s"] = time.perf_counter() - t0
    return RunOutcome(
        status=status,
        error=error,
        failed_cell=failed_cell,
        timings={k: round(v, 4) for k, v in timings.items()},
        mlflow_run_id=tracker.run_id if tracker else None,
        mlflow_error=tracker.error if tracker else None,
        started=started,
        finished=datetime.now(UTC),
        output_notebook=str(output) if output.exists() else None,
        report=str(report),
    )


#: a kernel that dies before its first reply is started this many times in all
KERNEL_START_ATTEMPTS = 3


def _papermill(
    req: RunRequest, params: dict[str, Any], output: Path
) -> tuple[Status, str | None, int | None]:
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    try:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                papermill.execute_notebook(
                    str(req.notebook),
                    str(output),
                    parameters=params,
                    kernel_name=req.kernel_name,
                    language="python",
                    cwd=str(req.cwd),
                    execution_timeout=req.cell_timeout_s,
                    progress_bar=False,
                    log_output=True,
                    request_save_on_cell_execute=True,
                )
                break
            except RuntimeError as exc:
                # the kernel exited before it answered: no cell ran, so starting it again is
                # safe (two kernels starting at once can race for the same free port)
                if "before replying to kernel_info" not in str(exc):
                    raise
                if attempt == KERNEL_START_ATTEMPTS:
                    raise
                log.warning(
                    "kernel start %d of %d failed (%s); again", attempt, KERNEL_START_ATTEMPTS, exc
                )
    except PapermillExecutionError as exc:
        where = f"In [{exc.exec_count}]" if exc.exec_count else f"cell {exc.cell_index}"
        return "failed", f"{where}: {exc.ename}: {exc.evalue}".rstrip(": "), _failed_cell(output)
    except (CellTimeoutError, TimeoutError):
        cell = _failed_cell(output)
        where = f"cell {cell}" if cell is not None else "a cell"
        message = (
            f"{where} did not finish within the per-cell timeout of {req.cell_timeout_s} s "
            "(cell_timeout_s); the run was stopped there"
        )
        return "timed_out", message, cell
    except DeadKernelError as exc:
        cell = _failed_cell(output)
        return "failed", f"the kernel died (out of memory?): {exc}", cell
    except Exception as exc:  # a broken notebook, a missing kernel...: say so, keep going
        log.exception("papermill could not run %s", req.notebook)
        return "failed", f"{type(exc).__name__}: {exc}", _failed_cell(output)
    return "succeeded", None, None


def _failed_cell(output: Path) -> int | None:
    """Index in the saved output notebook of the cell that raised (papermill marks it), else
    of the last cell papermill started (a timeout or a dead kernel)."""
    try:
        cells = json.loads(output.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    marks = [(c.get("metadata") or {}).get("papermill") or {} for c in cells]
    for index, mark in enumerate(marks):
        if mark.get("exception") is True:
            return index
    started = [i for i, mark in enumerate(marks) if mark.get("start_time")]
    return started[-1] if started else None
