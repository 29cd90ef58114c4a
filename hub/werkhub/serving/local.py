"""The embedded default backend: each replica a local process in its owner's sandbox.

The scoring server runs under the owner's uid (bubblewrap where the machine can, as for
notebook servers and jobs), with the endpoint's CPU and memory limits, the booked GPUs
as its only devices, and a private copy of the model in its own folder; it listens on a
loopback port and dies with the werkhub service. Without a sandbox configured (a
non-root development install) it runs as a plain child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkhub.gpus.devices import CPU_ONLY_ENV
from werkhub.sandbox.children import spawn_logged
from werkhub.sandbox.prepare import prepare
from werkhub.serving.replicas import LOG_NAME, Replica, ReplicaSpec, scoring_argv, scoring_env, tail


@dataclass
class _Running:
    proc: asyncio.subprocess.Process
    release: Callable[[], None] | None


def model_copy(model_dir: Path, workdir: Path) -> Path:
    """The replica's own copy of the model (files read-only), inside its folder."""
    target = workdir / "model"
    if not (target / "MLmodel").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(model_dir, target)
        for root, dirs, files in os.walk(target):
            for name in files:
                os.chmod(os.path.join(root, name), 0o444)
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o555)
    return target


class LocalBackend:
    """Scoring servers as sandboxed local processes (``sandbox``: the service's sandbox
    settings, empty for none)."""

    def __init__(self, sandbox: dict[str, Any], python: str = sys.executable) -> None:
        self.sandbox = sandbox
        self.python = python

    def _settings(self, spec: ReplicaSpec) -> dict[str, Any]:
        return {**self.sandbox, "mem_limit": spec.memory or "", "cpu_limit": spec.cpu}

    def _prepare(self, spec: ReplicaSpec) -> tuple[list[str], dict[str, Any], Any]:
        spec.workdir.mkdir(parents=True, exist_ok=True)
        model = model_copy(spec.model_dir, spec.workdir)
        argv = scoring_argv(self.python, "127.0.0.1", spec.port)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **scoring_env(str(model), spec),
            **(
                CPU_ONLY_ENV
                if not spec.gpu_indexes
                else {
                    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                    "CUDA_VISIBLE_DEVICES": ",".join(map(str, spec.gpu_indexes)),
                }
            ),
        }
        home = spec.workdir / "home"
        if not self.sandbox:
            home.mkdir(exist_ok=True)
            return argv, {"cwd": str(home), "env": {**env, "HOME": str(home)}}, None
        prepared = prepare(
            self._settings(spec),
            spec.owner,
            command=argv,
            home=home,
            env=env,
            label="endpoint",
            cwd=home,
            writable=[spec.workdir],
            gpu_indexes=spec.gpu_indexes,
        )
        options = {"cwd": prepared.cwd, "env": prepared.env, "preexec_fn": prepared.preexec}
        return prepared.argv, options, prepared.release

    async def start(self, spec: ReplicaSpec) -> Replica:
        argv, options, release = await asyncio.to_thread(self._prepare, spec)
        proc = await spawn_logged(argv, options, release, spec.workdir / LOG_NAME)
        return Replica(spec, f"http://127.0.0.1:{spec.port}", _Running(proc, release))

    async def stop(self, replica: Replica, grace: float = 10.0) -> None:
        running: _Running = replica.handle
        proc = running.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # anything the server left in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if running.release is not None:
            release, running.release = running.release, None
            await asyncio.to_thread(release)

    async def exited(self, replica: Replica) -> int | None:
        return replica.handle.proc.returncode

    def log_tail(self, replica: Replica, lines: int = 30) -> str:
        return tail(replica.spec.workdir / LOG_NAME, lines)
