"""Batch scripts of werkhub's Slurm jobs, built as text: a user server (``spawner.kind:
slurm``) and a scheduled job's run, and where each runs (:func:`placement`).

A job inside a booking of whole nodes names the booking's reservation
(``--reservation=werkhub-b<id>``); every booked job asks for the booked GPUs by type on the
booked node (``--gres=gpu:<type>:<n>``, ``--nodelist``), so Slurm itself sets
``CUDA_VISIBLE_DEVICES``. Work outside a booking runs in the CPU partition without GPUs.
Every job has a time limit (``--time``): a job without one would wait for every reservation
ahead on its nodes. Options are ``#SBATCH`` lines of the script; the OS user is given on
``sbatch``'s command line (:func:`submit_argv`), as root submits on the user's behalf.

The environment is written into the script (``--export=NIL``: nothing of the submitting
service leaks into the job; Slurm adds the user's login environment and its own
``SLURM_*`` variables). The script holds the server's hub token: Slurm keeps it in its own
state folder, readable by root and the job's owner only.

Pure: standard library and pydantic only.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from werkhub.slurm.commands import reservation_name

#: names an environment variable of a job may have
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Slurm states in which a job is not over yet
LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
     "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED"}
)  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Placement(_Model):
    """Where a job runs: partition, and inside a booking its reservation, node and GPUs."""

    partition: str
    reservation: str = ""
    node: str = ""
    gpu_type: str = ""
    gpus: int = 0

    def options(self) -> list[str]:
        """The ``sbatch`` options of this placement."""
        found = [f"--partition={self.partition}"] if self.partition else []
        if self.reservation:
            found.append(f"--reservation={self.reservation}")
        if self.node:
            found.append(f"--nodelist={self.node}")
        if self.gpus:
            kind = f"{self.gpu_type}:" if self.gpu_type else ""
            found.append(f"--gres=gpu:{kind}{self.gpus}")
        return found

    def describe(self) -> str:
        if not self.gpus:
            return f"CPU only, partition {self.partition or '(default)'}"
        held = f" in reservation {self.reservation}" if self.reservation else ""
        kind = f"{self.gpu_type} " if self.gpu_type else ""
        return f"{self.gpus} {kind}GPU(s) on {self.node}{held}"


def slurm_type(gpu_type: str, renames: Mapping[str, str]) -> str:
    """Slurm's gres type of werkhub's GPU type: ``renames`` maps the models that
    ``slurm.gpu_types`` gives back to Slurm's names; others are Slurm's own (``gpu``, the
    model of an untyped gres, is no type at all)."""
    found = renames.get(gpu_type, gpu_type)
    return "" if found == "gpu" else found


def placement(
    devices: Sequence[str],
    *,
    booking_id: int | None,
    gpu_type: str,
    partition: str,
    cpu_partition: str,
    reserved: bool,
    renames: Mapping[str, str] | None = None,
    own_partition: bool = False,
) -> Placement:
    """Where a job with the booked ``devices`` (units ``<node>/<index>``) runs: no devices,
    the CPU partition; otherwise the node holding most of them (a job runs on one node),
    with that node's GPUs, inside reservation ``werkhub-b<id>`` when Slurm holds the
    booking's whole nodes (``reserved``), or in the booking's own partition
    ``werkhub-b<id>`` when Slurm holds part of a node that way (``own_partition``: the
    booked user's job there preempts the hold job that keeps the GPUs)."""
    if not devices or booking_id is None:
        return Placement(partition=cpu_partition)
    per_node: dict[str, int] = {}
    for unit in devices:
        node = unit.split("/")[0]
        per_node[node] = per_node.get(node, 0) + 1
    node = max(per_node, key=lambda n: (per_node[n], -list(per_node).index(n)))
    own = own_partition and not reserved
    return Placement(
        partition=reservation_name(booking_id) if own else partition,
        reservation=reservation_name(booking_id) if reserved else "",
        node=node,
        gpu_type=slurm_type(gpu_type, renames or {}),
        gpus=per_node[node],
    )


def minutes_until(end: datetime, now: datetime, *, least: int = 1) -> int:
    """Whole minutes from ``now`` to ``end`` (rounded down, so a job ends with its
    booking), at least ``least``."""
    return max(least, math.floor((end - now).total_seconds() / 60))


def minutes_for(seconds: float) -> int:
    """A job's ``--time`` for a deadline of ``seconds`` (rounded up, at least 1)."""
    return max(1, math.ceil(seconds / 60))


class JobScript(_Model):
    """One batch job: what runs (``command``), as whom, where and for how long."""

    name: str = Field(min_length=1, max_length=64)
    command: tuple[str, ...] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str
    output: str
    minutes: int = Field(ge=1, le=366 * 24 * 60)
    place: Placement
    cpus: int = Field(default=1, ge=1, le=1024)
    mem: str = ""
    #: a line the job prints first, for its log (the GPUs Slurm gave it)
    banner: bool = True


def _quoted_env(env: Mapping[str, str]) -> list[str]:
    lines = []
    for key in sorted(env):
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"not an environment variable name: {key!r}")
        lines.append(f"export {key}={shlex.quote(env[key])}")
    return lines


def script(job: JobScript) -> str:
    """The batch script of ``job``: ``#SBATCH`` options, the environment, the command."""
    options = [
        f"--job-name={job.name}",
        *job.place.options(),
        f"--time={job.minutes}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={job.cpus}",
        *([f"--mem={job.mem}"] if job.mem else []),
        f"--chdir={job.workdir}",
        f"--output={job.output}",
        "--export=NIL",
    ]
    for option in options:
        if "\n" in option:
            raise ValueError(f"an sbatch option holds a line break: {option!r}")
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in options), "set -u"]
    lines += _quoted_env(job.env)
    if job.banner:
        lines.append(
            'echo "werkhub: job ${SLURM_JOB_ID} on ${SLURMD_NODENAME:-?} as $(id -un):'
            ' CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} SLURM_JOB_GPUS=${SLURM_JOB_GPUS:-}"'
        )
    lines.append(f"exec {shlex.join(job.command)}")
    return "\n".join(lines) + "\n"


def submit_argv(user: str, path: str) -> list[str]:
    """``sbatch --parsable`` of the script at ``path``, run as OS ``user`` (root submits
    on their behalf)."""
    return ["sbatch", "--parsable", f"--uid={user}", f"--gid={user}", path]


def server_command(python: str, args: Sequence[str]) -> list[str]:
    """The single-user server of JupyterHub with the hub's arguments."""
    return [python, "-m", "jupyterhub.singleuser", *args]


def run_command(python: str, request: str) -> list[str]:
    """werkhub's job runner (papermill) for the run request at ``request``."""
    return [python, "-m", "werkhub.jobs.run.execute", request]


def progress_line(job_id: str, state: str, reason: str, nodes: Sequence[str]) -> str:
    """What a person sees while a job starts: its state, why it waits, where it runs."""
    if state == "PENDING":
        return f"Slurm job {job_id} is pending ({reason or 'waiting'})"
    if state in ("RUNNING", "CONFIGURING", "COMPLETING"):
        where = f" on {', '.join(nodes)}" if nodes else ""
        return f"Slurm job {job_id} is {state.lower()}{where}"
    return f"Slurm job {job_id} ended: {state}{f' ({reason})' if reason else ''}"


def live(state: str) -> bool:
    """Whether a job in Slurm ``state`` may still run (``CANCELLED by 0`` is over)."""
    return state.split(" ")[0] in LIVE_STATES


def run_job(
    *,
    run_id: int | str,
    owner: str,
    python: str,
    stage: str,
    cwd: str,
    deadline_s: float,
    place: Placement,
    env: Mapping[str, str],
) -> JobScript:
    """The batch job of one run of a scheduled job: werkhub's runner on the request in the
    run's ``stage`` folder (in the owner's home), its log there; ``--time`` is the run's
    deadline, rounded up to whole minutes."""
    return JobScript(
        name=f"werkhub-run-{run_id}"[:64],
        command=tuple(run_command(python, f"{stage}/request.json")),
        env={**env, "JUPYTERHUB_USER": owner},
        workdir=cwd,
        output=f"{stage}/log.txt",
        minutes=minutes_for(deadline_s),
        place=place,
    )


def exit_code(value: str) -> int | None:
    """Slurm's ``ExitCode=1:0`` (status:signal) as an exit status, a signal as 128+n;
    None when Slurm gives none."""
    status, sep, signal = (value or "").partition(":")
    if sep and signal.isdigit() and int(signal):
        return 128 + int(signal)
    return int(status) if status.isdigit() else None
