"""Embedded default: one local process per user, with a home folder under the state folder.

The process runs as the same operating-system user as the hub, so it gives no
isolation between users beyond separate home folders: use the Docker or Kubernetes
backend where users must not reach each other's files.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Float

from werkhub.spawners.booking import BookingSpawnerMixin
from werkhub.spawners.gpu import GpuAssignment, gpu_environment


class WerkhubLocalSpawner(BookingSpawnerMixin, SimpleLocalProcessSpawner):
    """Local process spawner with per-user homes, booked GPUs pinned by environment, and
    prompt readiness detection."""

    ready_poll_interval = Float(
        0.05,
        help="""Seconds between readiness checks while the server starts.

        The hub itself checks with exponential back-off (0.2 s, 0.4 s, 0.8 s, ...), which
        adds up to a second or two to every spawn; polling here lets start() return as
        soon as the server answers, so the hub's first check succeeds.""",
    ).tag(config=True)

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
        await self._wait_answering(f"http://{ip}:{port}{self.server.base_url}api")
        return ip, port

    async def _wait_answering(self, url: str) -> None:
        """Return once the server answers below 500, or leave it to the hub on timeout/exit."""
        client = AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                return  # exited: the hub's own checks report the failure
            if await self.poll() is not None:
                return
            try:
                reply = await client.fetch(url, raise_error=False, request_timeout=2)
                if reply.code < 500 and reply.code != 599:
                    return
            except (HTTPClientError, OSError):
                pass
            await asyncio.sleep(self.ready_poll_interval)
