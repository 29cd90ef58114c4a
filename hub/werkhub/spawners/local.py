"""Embedded default: one local process per user, with a home folder under the state folder.

The process runs as the same operating-system user as the hub, so it gives no
isolation between users beyond separate home folders: use the Docker or Kubernetes
backend where users must not reach each other's files.
"""

from __future__ import annotations

import os
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner

from werkhub.spawners.booking import BookingSpawnerMixin
from werkhub.spawners.gpu import GpuAssignment, gpu_environment
from werkhub.spawners.ready import PromptReadyMixin


class WerkhubLocalSpawner(BookingSpawnerMixin, PromptReadyMixin, SimpleLocalProcessSpawner):
    """Local process spawner with per-user homes, booked GPUs pinned by environment, and
    prompt readiness detection."""

    ready_alive_every = 0  # a local process: cheap to look at on every poll

    def get_args(self) -> list[str]:
        args = super().get_args()
        if os.geteuid() == 0:
            # Jupyter Server refuses root unless told; the embedded default on a root-run
            # machine (CI, single-admin boxes) must still start
            args.append("--allow-root")
        return args

    _gpu_env: dict[str, str] = {}

    def apply_gpu_assignment(self, assignment: GpuAssignment | None) -> None:
        # computed here so an impossible assignment (a MIG slice without its UUID) is
        # refused before the process starts
        self._gpu_env = gpu_environment(assignment, "local")

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
        ip, port = await super().start()
        await self.wait_until_answering(ip, port)
        return ip, port

    async def _alive(self) -> bool:
        if self.proc is None or self.proc.returncode is not None:
            return False
        return await self.poll() is None
