"""``spawner.kind: slurm``: each user server is a Slurm batch job of the user's OS account.

The hub (a Slurm administrator: root or ``SlurmUser``) submits the job with
``sbatch --uid`` through werkhub's :class:`~werkhub.slurm.cluster.SlurmClient`; the batch
script comes from the pure :mod:`werkhub.slurm.jobscript`. Inside a booking the job runs
in what holds it: the booking's reservation ``werkhub-b<id>`` when Slurm holds the whole
node, and always the booked node (``--nodelist``) and its GPUs (``--gres=gpu:<type>:<n>``),
so Slurm sets ``CUDA_VISIBLE_DEVICES``; its ``--time`` is the booking's end. Outside a
booking the server runs CPU-only in the CPU partition for ``slurm.server_minutes``.

``progress()`` shows the job's state (pending and why, running on which node); ``poll()``
asks Slurm (a controller that cannot be reached for a moment counts as "still running");
``stop()`` is ``scancel``. The job id is kept in the spawner's state, so a restarted hub
finds the job again. The server listens on 127.0.0.1: the cluster's nodes are hosts that
reach the hub on its loopback address (the test cluster's nodes are this host).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Bool, Dict, Float, Integer, Unicode

from werkhub.booking import ledger
from werkhub.config.schema import SlurmUserMapping
from werkhub.errors import WerkhubError
from werkhub.gpus.devices import GpuAssignment, gpu_environment
from werkhub.slurm import homes, jobscript, placing, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.commands import Job
from werkhub.slurm.errors import SlurmError, SlurmUnavailable
from werkhub.spawners.booking import BookingSpawnerMixin
from werkhub.spawners.ready import PromptReadyMixin

#: seconds between looks at a starting job
JOB_POLL_S = 0.25
#: how long poll() waits out an unreachable controller before saying "still running"
POLL_RETRY_S = 3.0


class SlurmJobSpawner(Spawner):
    """A single-user server as a Slurm batch job (the backend under werkhub's mixins)."""

    slurm_conf = Unicode("", help="slurm.conf of the cluster (SLURM_CONF); empty: default").tag(
        config=True
    )
    partition = Unicode("", help="Partition of servers inside a GPU booking").tag(config=True)
    cpu_partition = Unicode("cpu", help="Partition of CPU-only servers").tag(config=True)
    server_minutes = Integer(480, help="--time of a CPU-only server, in minutes").tag(config=True)
    user_mapping = Dict(help="slurm.user_mapping: mode, prefix, map").tag(config=True)
    create_users = Bool(False, help="Create missing OS users with useradd").tag(config=True)
    gpu_renames = Dict(help="werkhub GPU model -> Slurm gres type (slurm.gpu_types)").tag(
        config=True
    )
    python = Unicode("", help="Python on the nodes with jupyterhub; empty: werkhub's own").tag(
        config=True
    )
    hold_wait = Float(
        15, help="Seconds a booked server waits for Slurm to hold its booking (0: not)"
    ).tag(config=True)
    command_timeout = Float(10, help="Seconds one Slurm command may take").tag(config=True)
    retry_seconds = Float(30, help="Seconds a command is retried while Slurm is away").tag(
        config=True
    )

    job_id: str = ""
    os_user: str = ""
    _gpu_env: dict[str, str] = {}
    _job_state: str = ""

    # -- Slurm ---------------------------------------------------------------------------

    def _client(self, retry: float | None = None) -> SlurmClient:
        return SlurmClient(
            self.slurm_conf,
            timeout=self.command_timeout,
            retry_seconds=self.retry_seconds if retry is None else retry,
        )

    def resolve_os_user(self) -> str:
        """The OS account the server runs as; 403 for a hub user without one."""
        mapping = users_mapping(self.user_mapping)
        try:
            return users.ensure(self.user.name, mapping, create=self.create_users)
        except WerkhubError as exc:
            raise web.HTTPError(exc.status, str(exc), reason=str(exc)[:200]) from None

    def _placement(self, booking: dict[str, Any] | None, reserved: bool, own: bool) -> Any:
        return jobscript.placement(
            list((booking or {}).get("devices") or []),
            booking_id=(booking or {}).get("id"),
            gpu_type=str((booking or {}).get("gpu_type") or ""),
            partition=self.partition,
            cpu_partition=self.cpu_partition,
            reserved=reserved,
            renames=self.gpu_renames,
            own_partition=own,
        )

    def _minutes(self, booking: dict[str, Any] | None) -> int:
        if not booking or not booking.get("end"):
            return self.server_minutes
        end = booking["end"]
        end = end if isinstance(end, datetime) else datetime.fromisoformat(str(end))
        return jobscript.minutes_until(end, ledger.utcnow())

    def _log_folder(self, os_user: str) -> tuple[str, str]:
        """The OS user's home and a log file in its ``.werkhub`` folder (made for them)."""
        entry = pwd.getpwnam(os_user)
        folder = Path(entry.pw_dir) / ".werkhub"
        try:
            homes.make_dirs(entry, folder)  # as the user: a home is theirs
        except SlurmError as exc:
            self.log.warning("no log folder for %s's Slurm server: %s", os_user, exc)
            return entry.pw_dir, "/dev/null"
        return entry.pw_dir, str(folder / "server-%j.log")

    def _script(self, os_user: str, place: Any, minutes: int, home: str, output: str) -> str:
        env = {**self.get_env(), **(self._gpu_env or gpu_environment(None, "kubernetes"))}
        env.update({"HOME": home, "USER": os_user, "SHELL": "/bin/bash"})
        if place.gpus:  # Slurm sets it for the GPUs it grants
            env.pop("CUDA_VISIBLE_DEVICES", None)
        python = self.python or _own_python()
        env["PATH"] = f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin"
        mem = int(self.mem_limit or 0)
        job = jobscript.JobScript(
            name=f"werkhub-{self.user.name}"[:64],
            command=tuple(jobscript.server_command(python, self.get_args())),
            env=env,
            workdir=home,
            output=output,
            minutes=minutes,
            place=place,
            cpus=max(1, int(self.cpu_limit or 1)),
            mem=f"{max(1, mem // 2**20)}M" if mem else "",
        )
        return jobscript.script(job)

    def _submit(self, text: str, os_user: str) -> str:
        folder = tempfile.mkdtemp(prefix="werkhub-sbatch-")  # 0700: the script holds a token
        try:
            path = Path(folder) / "server.sh"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            return self._client().submit(jobscript.submit_argv(os_user, str(path)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _job(self, retry: float | None = None) -> Job | None:
        return await asyncio.to_thread(self._client(retry).job, self.job_id)

    # -- the spawner's life ---------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        os_user = self.os_user or self.resolve_os_user()
        booking: dict[str, Any] | None = getattr(self, "gpu_booking", None)
        reserved = own = False
        if booking and booking.get("devices"):
            reserved, own = await asyncio.to_thread(placing.held_as, self._client(), booking["id"])
            if not (reserved or own) and self.hold_wait:
                self._say(f"Waiting for Slurm to hold booking {booking['id']}")
                reserved, own = await asyncio.to_thread(
                    placing.wait_held, self._client(), booking["id"], self.hold_wait
                )
        place = self._placement(booking, reserved, own)
        if self.port == 0:
            self.port = random_port()
        home, output = await asyncio.to_thread(self._log_folder, os_user)
        text = self._script(os_user, place, self._minutes(booking), home, output)
        try:
            self.job_id = await asyncio.to_thread(self._submit, text, os_user)
        except SlurmError as exc:
            raise web.HTTPError(exc.status, str(exc), reason=str(exc)[:200]) from None
        self.os_user = os_user
        self._say(f"Slurm job {self.job_id} submitted as {os_user}: {place.describe()}")
        job = await self._until_running()
        self._say(jobscript.progress_line(job.id, job.state, job.reason, job.nodes))
        return ("127.0.0.1", self.port)

    def _say(self, message: str) -> None:
        self.log.info("%s: %s", self.user.name, message)
        say = getattr(self, "_progress", None)
        if say is not None:
            say(message)

    async def _until_running(self) -> Job:
        """Wait until the job runs, telling each new state (pending and why); an error
        with Slurm's reason when it ends before running."""
        told = ""
        while True:
            try:
                job = await self._job()
            except SlurmUnavailable as exc:
                self._say(f"Slurm cannot be reached: {exc.reason}; waiting")
                job = None
            if job is not None:
                self._job_state = job.state
                line = jobscript.progress_line(job.id, job.state, job.reason, job.nodes)
                if job.state == "RUNNING":
                    return job
                if not jobscript.live(job.state):
                    self.job_id = ""
                    raise web.HTTPError(500, line, reason=line[:200])
                if line != told:
                    self._say(line)
                    told = line
            await asyncio.sleep(JOB_POLL_S)

    async def poll(self) -> int | None:
        if not self.job_id:
            return 0
        try:
            job = await self._job(POLL_RETRY_S)
        except SlurmUnavailable as exc:
            self.log.warning("Slurm unreachable polling job %s: %s", self.job_id, exc.reason)
            return None  # the controller restarts: the job runs on without it
        except SlurmError as exc:  # purged, or an id Slurm forgot
            self.log.info("job %s of %s: %s", self.job_id, self.user.name, exc)
            return 0
        if job is None:
            return 0
        self._job_state = job.state
        if jobscript.live(job.state):
            return None
        return 0 if job.state == "COMPLETED" else 1

    async def stop(self, now: bool = False) -> None:
        if not self.job_id:
            return
        job_id = self.job_id
        try:
            await asyncio.to_thread(self._client().cancel, job_id)
        except SlurmError as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and await self.poll() is None:
            await asyncio.sleep(JOB_POLL_S)
        self.log.info("Slurm job %s of %s cancelled", job_id, self.user.name)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.job_id:
            state.update(slurm_job_id=self.job_id, slurm_user=self.os_user)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.job_id = str(state.get("slurm_job_id") or "")
        self.os_user = str(state.get("slurm_user") or "")

    def clear_state(self) -> None:
        super().clear_state()
        self.job_id = ""
        self.os_user = ""


class WerkhubSlurmSpawner(BookingSpawnerMixin, PromptReadyMixin, SlurmJobSpawner):
    """Booking checks (the service decides the GPUs), Slurm jobs, prompt readiness."""

    async def start(self) -> tuple[str, int]:
        self.os_user = ""
        self.os_user = self.resolve_os_user()  # 403 before any booking is touched
        ip, port = await super().start()  # the booking mixin, then SlurmJobSpawner
        await self.wait_until_answering(ip, port)
        return ip, port

    def apply_gpu_assignment(self, assignment: GpuAssignment | None) -> None:
        # WERKHUB_* only: Slurm itself sets CUDA_VISIBLE_DEVICES for the granted GPUs
        self._gpu_env = gpu_environment(assignment, "kubernetes")

    async def _alive(self) -> bool:
        return await self.poll() is None


def users_mapping(raw: dict[str, Any]) -> SlurmUserMapping:
    """slurm.user_mapping as the users module reads it."""
    return SlurmUserMapping.model_validate(raw or {})


def _own_python() -> str:
    return sys.executable
