"""Embedded default: one local process per user, with a home folder under the state folder.

With ``sandbox`` settings (the default wherever bubblewrap works, see
:mod:`werkhub.sandbox`) each server runs in a sandbox of its own: only its home is
writable, the state folder and other homes are absent, its own PID namespace, only the
booked ``/dev/nvidia*`` devices, limits by cgroup or ulimit, and, when werkhub runs as
root, the user's own unprivileged uid. Where it cannot sandbox (``spawner.sandbox: off``,
or a machine without bubblewrap: werkhub then starts single-team) a root-run werkhub still
starts the process under the user's own uid with the same limits, never as root; run as
an ordinary user, the process runs as that user.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from subprocess import Popen
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from jupyterhub.utils import random_port
from traitlets import Dict

from werkhub.gpus.devices import GpuAssignment, gpu_environment
from werkhub.spawners.booking import BookingSpawnerMixin
from werkhub.spawners.ready import PromptReadyMixin


class SandboxedProcessSpawner(SimpleLocalProcessSpawner):
    """Starts the server process in its sandbox when ``sandbox`` settings are given."""

    sandbox = Dict(
        help="werkhub.sandbox settings (werkhub.app.configurer.sandbox_settings); empty: none"
    ).tag(config=True)

    _gpu_indexes: tuple[int, ...] = ()
    _release: Any = None

    async def start(self) -> tuple[str, int]:
        if not self.sandbox:
            return await super().start()
        from werkhub.sandbox.prepare import prepare

        if self.port == 0:
            self.port = random_port()
        command = [*self.cmd, *self.get_args()]
        prepared = await asyncio.to_thread(
            prepare,
            self.sandbox,
            self.user.name,
            command=command,
            home=Path(self.home_dir),
            env=self.get_env(),
            label="server",
            gpu_indexes=self._gpu_indexes,
        )
        self.log.info(
            "Spawning %s for %s in a sandbox (%s)",
            shlex.join(command),
            self.user.name,
            prepared.env["WERKHUB_SANDBOX"],
        )
        try:
            # started from the event loop's thread: the sandbox dies with the hub
            # (bubblewrap's --die-with-parent follows the thread that forked it)
            self.proc = Popen(
                prepared.argv,
                env=prepared.env,
                preexec_fn=prepared.preexec,
                start_new_session=True,
                cwd=prepared.cwd,
            )
        except OSError:
            prepared.release()
            raise
        self.pid = self.proc.pid
        self._release = prepared.release
        return (self.ip or "127.0.0.1", self.port)

    async def poll(self) -> int | None:
        status = await super().poll()
        if status is not None and self._release is not None:  # it ended on its own
            release, self._release = self._release, None
            await asyncio.to_thread(release)
        return status

    async def stop(self, now: bool = False) -> None:
        await super().stop(now)
        if self._release is not None:
            release, self._release = self._release, None
            await asyncio.to_thread(release)


class WerkhubLocalSpawner(BookingSpawnerMixin, PromptReadyMixin, SandboxedProcessSpawner):
    """Local process spawner with per-user homes, booked GPUs pinned by environment (and,
    sandboxed, by the devices bound in), and prompt readiness detection."""

    ready_alive_every = 0  # a local process: cheap to look at on every poll

    _gpu_env: dict[str, str] = {}

    def get_args(self) -> list[str]:
        args = super().get_args()
        if os.geteuid() == 0 and not self.sandbox:
            # only a spawner configured by hand without werkhub's settings gets here: the
            # configurer gives a root-run werkhub at least each person's own uid
            args.append("--allow-root")
        return args

    def apply_gpu_assignment(self, assignment: GpuAssignment | None) -> None:
        # computed here so an impossible assignment (a MIG slice without its UUID) is
        # refused before the process starts
        self._gpu_env = gpu_environment(assignment, "local")
        self._gpu_indexes = tuple(
            sorted({d.index for d in assignment.devices}) if assignment else ()
        )

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.update(self._gpu_env or gpu_environment(None, "local"))
        return env

    def make_preexec_fn(self, name: str) -> Any:
        home = self.home_dir

        def preexec() -> None:
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec

    async def start(self) -> tuple[str, int]:
        ip, port = await super().start()  # the booking mixin, then SandboxedProcessSpawner
        await self.wait_until_answering(ip, port)
        return ip, port

    async def _alive(self) -> bool:
        if self.proc is None or self.proc.returncode is not None:
            return False
        return await self.poll() is None
