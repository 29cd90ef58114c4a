"""Start one run of a job and wait for its outcome: the backends of the scheduler.

* local (embedded default): ``python -m werkhub.jobs.run.execute request.json`` as a
  subprocess in its own process group, working folder the owner's home, with a clean
  environment (the service's own hub token never reaches user code); the whole group is
  killed when the run passes its deadline. Where the service has sandbox settings
  (``WERKHUB_SANDBOX_SETTINGS``) the runner runs in the owner's bubblewrap sandbox, as
  their server does: only the owner's home and this run's folder writable, the rest of the
  state folder absent, the booked GPUs (``WERKHUB_GPU_UNITS``) the only devices.
* docker: the same request run in a container of the owner's image with the owner's home
  volume (``werkhub.jobs.run.docker``).
* kubernetes: werkhub builds the batch/v1 Job manifest; submitting it needs a cluster
  and the kubernetes client, which this installation does not have: the run fails with
  that message and the manifest is kept next to the run for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkhub.config.wiring import SOVEREIGN_ENV
from werkhub.sandbox.prepare import Prepared, prepare, settings_from_env
from werkhub.sandbox.spec import unit_indexes

#: extra seconds after ``deadline_s`` before the kill (kernel start is not the notebook's)
REPORT_GRACE_S = 2.0
#: seconds between SIGTERM and SIGKILL of a run's process group
KILL_GRACE_S = 5.0
#: variables a run inherits from the service's environment (nothing secret)
INHERITED = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


@dataclass
class Outcome:
    """What became of a run; ``status`` is succeeded | failed | timed_out."""

    status: str
    error: str | None = None
    failed_cell: int | None = None
    exit_code: int | None = None
    mlflow_run_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_environment(extra: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(SOVEREIGN_ENV)
    env.update({"HOME": str(home), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def write_request(out_dir: Path, request: dict[str, Any], redact: bool = False) -> Path:
    """``out_dir/request.json``, readable by the service only; with ``redact`` the
    secrets of its environment (the owner's MLflow token) are left out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "request.json"
    if redact:
        env = {k: "(hidden)" if secret(k) else v for k, v in request.get("env", {}).items()}
        request = {**request, "env": env}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(request, indent=1, default=str))
    return path


def secret(key: str) -> bool:
    return any(word in key.upper() for word in ("TOKEN", "SECRET", "PASSWORD", "KEY"))


def read_outcome(out_dir: Path, exit_code: int | None, killed: bool, deadline_s: float) -> Outcome:
    """The runner's result.json, or what the exit tells when it wrote none."""
    result_file = out_dir / "result.json"
    data: dict[str, Any] = {}
    if result_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(result_file.read_text())
    if killed:
        return Outcome(
            status="timed_out",
            error=data.get("error") or f"the run passed its deadline of {deadline_s:g} s",
            failed_cell=data.get("failed_cell"),
            exit_code=exit_code,
            mlflow_run_id=data.get("mlflow_run_id"),
            timings=data.get("timings") or {},
        )
    if not data:
        return Outcome(
            status="failed",
            error=f"the runner ended (exit code {exit_code}) without a result; see the log",
            exit_code=exit_code,
        )
    status = data.get("status", "failed")
    if status not in ("succeeded", "failed", "timed_out"):
        status = "failed"
    return Outcome(
        status=status,
        error=data.get("error"),
        failed_cell=data.get("failed_cell"),
        exit_code=exit_code,
        mlflow_run_id=data.get("mlflow_run_id"),
        timings=data.get("timings") or {},
    )


async def run_local(
    request: dict[str, Any],
    home: Path,
    env: dict[str, str],
    on_start: Any = None,
    python: str = sys.executable,
) -> Outcome:
    """Run ``request`` as a local subprocess group; ``on_start(pid)`` is called once it
    runs (the scheduler records the process group to end it after a crash)."""
    out_dir = Path(request["out_dir"])
    path = write_request(out_dir, request)
    log = (out_dir / "log.txt").open("ab")
    command = [python, "-m", "werkhub.jobs.run.execute", str(path)]
    options: dict[str, Any] = {"cwd": str(home), "env": run_environment(env, home)}
    release = None
    try:
        settings = settings_from_env()
        if settings:
            prepared = await asyncio.to_thread(
                sandboxed_run, settings, request, command, home, options["env"]
            )
            command, release = prepared.argv, prepared.release
            options = {"cwd": prepared.cwd, "env": prepared.env, "preexec_fn": prepared.preexec}
        # from the event loop's thread: the sandbox dies with the service, not a worker
        proc = await asyncio.create_subprocess_exec(
            *command,
            **options,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own process group: killed as a whole
        )
    except BaseException:
        if release is not None:
            release()
        raise
    finally:
        log.close()
    try:
        return await _follow(proc, request, out_dir, on_start)
    finally:
        if release is not None:
            await asyncio.shield(asyncio.to_thread(release))


def sandboxed_run(
    settings: dict[str, Any],
    request: dict[str, Any],
    command: list[str],
    cwd: Path,
    env: dict[str, str],
) -> Prepared:
    """The runner of ``request`` in its owner's sandbox: their home and this run's folder
    writable, the booked GPUs the only devices, CPU time bounded by the deadline."""
    owner = request["owner"]
    home = Path(settings["state_root"]) / "homes" / owner
    out_dir = Path(request["out_dir"])
    cores = float(settings.get("cpu_limit") or os.cpu_count() or 1)
    return prepare(
        settings,
        owner,
        command=command,
        home=home,
        env=env,
        label="job",
        cwd=cwd,
        writable=[out_dir],
        gpu_indexes=unit_indexes(env.get("WERKHUB_GPU_UNITS", "")),
        cpu_seconds=int((float(request["deadline_s"]) + REPORT_GRACE_S + 30) * cores),
    )


async def _follow(
    proc: asyncio.subprocess.Process, request: dict[str, Any], out_dir: Path, on_start: Any
) -> Outcome:
    if on_start is not None:
        await on_start(proc.pid)
    deadline = float(request["deadline_s"]) + REPORT_GRACE_S
    started = datetime.now(UTC)
    killed = False
    try:
        await asyncio.wait_for(proc.wait(), deadline)
    except TimeoutError:
        killed = True
        await kill_group(proc.pid, proc)
    except asyncio.CancelledError:
        await kill_group(proc.pid, proc)
        write_request(out_dir, request, redact=True)
        raise
    write_request(out_dir, request, redact=True)  # the runner has read it: no token kept
    outcome = read_outcome(out_dir, proc.returncode, killed, float(request["deadline_s"]))
    if killed:
        await asyncio.to_thread(report_after_kill, request, outcome, started)
    return outcome


def report_after_kill(request: dict[str, Any], outcome: Outcome, started: datetime) -> None:
    """A run killed at its deadline wrote no report: render one from the output notebook
    as far as papermill saved it (or from the notebook itself)."""
    from werkhub.jobs.report import ReportInfo, write_report

    out_dir = Path(request["out_dir"])
    output = out_dir / "output.ipynb"
    source = output if output.is_file() else Path(request["notebook"])
    info = ReportInfo(
        title=request.get("title") or request["job_name"],
        job_name=request["job_name"],
        owner=request["owner"],
        run_id=str(request["run_id"]),
        notebook=request.get("notebook_label") or Path(request["notebook"]).name,
        parameters=request["parameters"],
        started=started,
        duration_s=(datetime.now(UTC) - started).total_seconds(),
        status=outcome.status,
        error=outcome.error,
        tz=request.get("tz", "Europe/Berlin"),
    )
    try:
        write_report(source, out_dir / "report.html", info, hide_code=request["hide_code"])
    except Exception as exc:  # the outcome stands without a report
        outcome.error = f"{outcome.error}; no report: {exc}"


async def kill_group(pgid: int, proc: asyncio.subprocess.Process | None = None) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    ends = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < ends:
        if proc is not None and proc.returncode is not None:
            break
        if proc is None and not group_alive(pgid):
            return
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def orphan_of(pgid: int, run_dir: str) -> bool:
    """Whether process ``pgid`` is still the runner of the run in ``run_dir`` (a crashed
    service left it behind); a reused pid of an unrelated process is left alone."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "werkhub.jobs.run.execute" in cmdline and run_dir in cmdline


async def run_docker(request: dict[str, Any], options: dict[str, Any]) -> Outcome:
    """Run ``request`` in a container through J1's Docker runner."""
    from werkhub.jobs.run import docker as docker_runner  # imported only with spawner.kind docker

    out_dir = Path(request["out_dir"])
    write_request(out_dir, request, redact=True)  # a record: the container gets its own
    started = time.monotonic()
    try:
        result = await asyncio.to_thread(docker_runner.run_in_container, request, **options)
    except Exception as exc:  # the container could not even start
        return Outcome(status="failed", error=f"container backend: {exc}")
    data = result if isinstance(result, dict) else getattr(result, "__dict__", {})
    if not (out_dir / "result.json").is_file() and data:
        (out_dir / "result.json").write_text(json.dumps(data, default=str))
    outcome = read_outcome(out_dir, data.get("exit_code"), False, request["deadline_s"])
    outcome.timings.setdefault("total_s", round(time.monotonic() - started, 3))
    return outcome


async def end_containers(options: dict[str, Any], run_id: Any) -> None:
    """Remove what a crashed service left of run ``run_id`` on the Docker backend."""
    from werkhub.jobs.run import docker as docker_runner

    try:
        removed = await asyncio.to_thread(
            docker_runner.end_run_containers, options["base_url"], run_id
        )
    except Exception as exc:  # the engine is away: the run is still marked interrupted
        logging.getLogger(__name__).warning("containers of run %s: %s", run_id, exc)
        return
    if removed:
        logging.getLogger(__name__).warning("removed %d container(s) of run %s", removed, run_id)


def redacted(manifest: dict[str, Any]) -> dict[str, Any]:
    """A Job manifest to keep on disk: the run request in its containers' environment
    without secrets (a cluster would get them from a Secret)."""
    from werkhub.jobs.run.manifests import REQUEST_ENV

    copy = json.loads(json.dumps(manifest))
    pod = copy.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []):
        for item in container.get("env", []):
            if item.get("name") == REQUEST_ENV:
                inner = json.loads(item["value"])
                env = inner.get("env", {})
                inner["env"] = {k: "(hidden)" if secret(k) else v for k, v in env.items()}
                item["value"] = json.dumps(inner)
    return copy


def run_kubernetes(request: dict[str, Any], manifest: dict[str, Any]) -> Outcome:
    out_dir = Path(request["out_dir"])
    write_request(out_dir, request, redact=True)
    (out_dir / "job-manifest.json").write_text(json.dumps(redacted(manifest), indent=1))
    return Outcome(
        status="failed",
        error=(
            "spawner.kind kubernetes: werkhub built the Job manifest (job-manifest.json "
            "next to this run) but submitting it needs a Kubernetes cluster and API access, "
            "which this installation does not have"
        ),
    )
