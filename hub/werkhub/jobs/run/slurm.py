"""Runs of scheduled jobs as Slurm batch jobs (``spawner.kind: slurm``).

The run executes as its owner's OS user (``slurm.user_mapping``), so what it reads and
writes must be theirs: the run's working copy lives in a stage folder in their home
(``~/.werkhub/jobs/run-<id>``, the request there readable by them only). The batch job
runs werkhub's runner (papermill, the report, MLflow as on every backend) on that request,
inside the owner's booking when the job has GPUs (the booking's reservation for whole
nodes, ``--gres`` on the booked node), else in the CPU partition; ``--time`` is the run's
deadline. The service follows the job with ``scontrol -o show job``, cancels it with
``scancel`` when the run passes its deadline or is cancelled, then copies what the run
wrote (report, output notebook, result, log) into the run's folder and removes the stage.

The Slurm job id is kept as the run's ``pid``: a service that crashed mid-run cancels the
job at its next start (:func:`cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pwd
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from werkhub.booking import ledger
from werkhub.config.schema import SlurmUserMapping
from werkhub.config.wiring import SOVEREIGN_ENV
from werkhub.errors import WerkhubError
from werkhub.jobs.run.launch import REPORT_GRACE_S, Outcome, read_outcome, report_after_kill
from werkhub.jobs.run.launch import write_request as write_record
from werkhub.slurm import commands, homes, inventory, jobscript, placing, reservations, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.errors import SlurmError, SlurmUnavailable

log = logging.getLogger(__name__)
#: seconds between looks at a run's job
POLL_S = 0.5
#: seconds a run of part of a node waits for the service to make its booking's partition
PARTITION_WAIT_S = 15.0
#: what is not copied back from the stage (the request holds the owner's tokens)
PRIVATE = ("request.json",)


def client(options: dict[str, Any], retry: float | None = None) -> SlurmClient:
    return SlurmClient(
        options.get("conf", ""),
        timeout=float(options.get("command_timeout", 10)),
        retry_seconds=float(options.get("retry_seconds", 30) if retry is None else retry),
    )


def os_account(owner: str, options: dict[str, Any]) -> pwd.struct_passwd:
    """The owner's OS account (made first where ``create_users`` says so)."""
    mapping = SlurmUserMapping.model_validate(options.get("user_mapping") or {})
    name = users.ensure(owner, mapping, create=bool(options.get("create_users")))
    return pwd.getpwnam(name)


def home_of(owner: str, options: dict[str, Any]) -> Path:
    """The owner's OS home, where their notebooks are (their servers run there)."""
    return Path(os_account(owner, options).pw_dir)


def _moved(value: Any, old: str, new: str) -> Any:
    """``value`` with paths under ``old`` moved under ``new`` (strings, lists, dicts)."""
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    return value


def stage_folder(account: pwd.struct_passwd, run_id: Any) -> Path:
    return Path(account.pw_dir) / ".werkhub" / "jobs" / f"run-{run_id}"


def stage(request: dict[str, Any], account: pwd.struct_passwd) -> tuple[Path, dict[str, Any]]:
    """The run's stage folder in the owner's home, and the request as the job reads it;
    the request (with the owner's tokens, mode 0600) and a template's working copy are
    written there as the owner (:mod:`werkhub.slurm.homes`)."""
    out_dir = Path(request["out_dir"])
    folder = stage_folder(account, request["run_id"])
    moved = _moved({k: v for k, v in request.items() if k != "env"}, str(out_dir), str(folder))
    moved["env"] = dict(request.get("env") or {})
    work = out_dir / "work"
    stream = homes.pack(
        {"request.json": json.dumps(moved, default=str).encode()},
        {"work": work} if work.is_dir() else None,
    )
    homes.remove(account, folder)  # a try of this run before a crash
    homes.put(account, folder, stream)
    return folder, moved


def collect(account: pwd.struct_passwd, folder: Path, out_dir: Path) -> None:
    """What the run wrote (report, output notebook, result, log), read as the owner, into
    the run's folder; the stage removed."""
    try:
        homes.take(account, folder, out_dir, leave=PRIVATE)
    finally:
        homes.remove(account, folder)


def hold(options: dict[str, Any], booking: dict[str, Any], os_user: str) -> tuple[bool, bool]:
    """Hold the run's booking in Slurm now when it is one of whole nodes (its reservation,
    as the service's reconciliation would make it a moment later); for part of a node, wait
    a little for its partition. (reserved, own partition)."""
    slurm = client(options)
    stock = inventory.read(slurm, options.get("partition", ""))
    wanted = reservations.desired(
        [{**booking, "state": booking.get("state") or "active"}],
        stock,
        lambda _hub_user: os_user,
        ledger.utcnow(),
        partition=options.get("partition", ""),
    )
    spec = wanted.specs.get(commands.reservation_name(booking["id"]))
    if spec is None:  # part of a node: its own partition, once the service made it
        return False, placing.wait_held(slurm, booking["id"], PARTITION_WAIT_S)[1]
    reservations.hold(slurm, spec)
    return True, False


def place_of(
    options: dict[str, Any], booking: dict[str, Any] | None, reserved: bool, own: bool = False
) -> Any:
    return jobscript.placement(
        list((booking or {}).get("devices") or []),
        booking_id=(booking or {}).get("id"),
        gpu_type=str((booking or {}).get("gpu_type") or ""),
        partition=options.get("partition", ""),
        cpu_partition=options.get("cpu_partition", "cpu"),
        reserved=reserved,
        renames=options.get("gpu_renames") or {},
        own_partition=own,
    )


def submit(options: dict[str, Any], account: pwd.struct_passwd, text: str) -> str:
    """``sbatch`` the script (a file of werkhub's own for Slurm to read, then removed)."""
    with tempfile.TemporaryDirectory(prefix="werkhub-sbatch-") as private:
        path = Path(private) / "run.sh"
        path.write_text(text)
        return client(options).submit(jobscript.submit_argv(account.pw_name, str(path)))


def job_fields(options: dict[str, Any], job_id: str) -> dict[str, str]:
    """``scontrol -o show job`` of one job as its fields (empty once Slurm forgot it)."""
    try:
        text = client(options, retry=5).run(commands.show_argv("job", job_id), f"show job {job_id}")
    except SlurmUnavailable:
        return {"JobState": "RUNNING", "Unreachable": "1"}  # the controller restarts
    except SlurmError as exc:
        if exc.status == 404:
            return {}
        raise
    found = commands.parse_records(text)
    return found[0] if found else {}


async def cancel(options: dict[str, Any], job_id: str) -> None:
    """``scancel`` a run's job (one that is gone already is fine)."""
    with contextlib.suppress(SlurmError):
        await asyncio.to_thread(client(options).cancel, job_id)


async def run_slurm(
    request: dict[str, Any],
    options: dict[str, Any],
    booking: dict[str, Any] | None,
    on_start: Callable[[int], Awaitable[None]] | None = None,
) -> Outcome:
    """Run ``request`` as a Slurm job of its owner and wait for its outcome."""
    out_dir = Path(request["out_dir"])
    try:
        account = await asyncio.to_thread(os_account, request["owner"], options)
    except WerkhubError as exc:
        return Outcome(status="failed", error=str(exc))
    try:
        folder, moved = await asyncio.to_thread(stage, request, account)
    except SlurmError as exc:
        return Outcome(status="failed", error=f"the run could not be staged: {exc}")
    reserved = own = False
    if booking and booking.get("devices"):
        try:
            reserved, own = await asyncio.to_thread(hold, options, booking, account.pw_name)
        except SlurmError as exc:
            await asyncio.to_thread(homes.remove, account, folder)
            return Outcome(status="failed", error=str(exc))
    python = options.get("python") or ""
    env = {
        **SOVEREIGN_ENV,
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        **(options.get("environment") or {}),
    }
    job = jobscript.run_job(
        run_id=request["run_id"],
        owner=request["owner"],
        python=python,
        stage=str(folder),
        cwd=str(moved["cwd"]),
        deadline_s=float(request["deadline_s"]) + REPORT_GRACE_S,
        place=place_of(options, booking, reserved, own),
        env=env,
    )
    try:
        job_id = await asyncio.to_thread(submit, options, account, jobscript.script(job))
    except SlurmError as exc:
        await asyncio.to_thread(homes.remove, account, folder)
        return Outcome(status="failed", error=str(exc))
    if on_start is not None:
        await on_start(int(job_id))
    try:
        fields, killed = await _follow(options, job_id, float(request["deadline_s"]))
    except asyncio.CancelledError:
        await asyncio.shield(cancel(options, job_id))
        with contextlib.suppress(SlurmError):
            await asyncio.shield(asyncio.to_thread(collect, account, folder, out_dir))
        raise
    try:
        await asyncio.to_thread(collect, account, folder, out_dir)
    except SlurmError as exc:
        log.warning("run %s: its files could not be collected: %s", request["run_id"], exc)
    write_record(out_dir, request, redact=True)
    state = fields.get("JobState", "")
    outcome = read_outcome(
        out_dir, jobscript.exit_code(fields.get("ExitCode", "")), killed or state == "TIMEOUT",
        float(request["deadline_s"]),
    )  # fmt: skip
    if outcome.status == "failed" and not (out_dir / "result.json").is_file():
        outcome.error = f"Slurm job {job_id} ended {state or 'unseen'}: {outcome.error}"
    if outcome.status == "timed_out" and (out_dir / "output.ipynb").is_file():
        # from the output notebook as far as it got (never the notebook in the owner's
        # home, which werkhub does not read itself)
        await asyncio.to_thread(report_after_kill, request, outcome, _started(fields))
    outcome.timings["slurm_job"] = float(job_id)
    return outcome


async def _follow(
    options: dict[str, Any], job_id: str, deadline_s: float
) -> tuple[dict[str, str], bool]:
    """Poll the job until it ends; cancel it once it ran past the deadline. Its last
    fields, and whether werkhub cancelled it for its deadline."""
    running_since: float | None = None
    killed = False
    fields: dict[str, str] = {}
    while True:
        seen = await asyncio.to_thread(job_fields, options, job_id)
        if not seen:  # Slurm forgot it (MinJobAge): it ended as last seen
            return fields, killed
        fields = seen
        state = fields.get("JobState", "")
        if not jobscript.live(state):
            return fields, killed
        if state == "RUNNING" and running_since is None:
            running_since = time.monotonic()
        late = running_since is not None and (
            time.monotonic() - running_since > deadline_s + REPORT_GRACE_S
        )
        if late and not killed:
            killed = True
            await cancel(options, job_id)
        await asyncio.sleep(POLL_S)


def _started(fields: dict[str, str]) -> datetime:
    return commands.parse_time(fields.get("StartTime")) or ledger.utcnow()
