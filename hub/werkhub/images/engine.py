"""Container engines: the ``docker`` or ``podman`` command line, found and configured.

Podman on hosts with hybrid cgroups and no CAP_SYS_RESOURCE (CI machines, some VMs) needs
runc, the cgroupfs manager and no default ulimits; ``images/containers.conf`` says so, and
:func:`podman_env` points ``CONTAINERS_CONF`` at it unless the environment already sets one.
:func:`start_podman_service` serves the Docker-compatible API (for DockerSpawner) on a socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from werkhub.errors import Upstream

PROJECT_CONTAINERS_CONF = Path(__file__).resolve().parents[3] / "images" / "containers.conf"


#: pauses before asking a container engine's API again after it failed (5xx, not a refusal)
ENGINE_RETRIES = (0.2, 0.5, 1.0, 2.0)


def engine_answer(status: int, explanation: str) -> Literal["gone", "retry", "error"]:
    """What an error of the engine's API says about a container: ``gone`` (it does not
    exist: 404, or podman's 500 "no such container" for one being removed), ``retry``
    (the engine failed, as a busy podman does for a moment: ask again), ``error`` (a real
    refusal)."""
    if status == 404 or (status == 500 and "no such container" in explanation.lower()):
        return "gone"
    return "retry" if status >= 500 else "error"


def inspect_patiently(
    api: Any, container: str, pauses: Sequence[float] = ENGINE_RETRIES
) -> dict[str, Any]:
    """``api.inspect_container(container)`` (docker-py), asked again while the engine
    fails; a refusal, or a container that is gone, is raised at once."""
    import docker

    for pause in (*pauses, None):
        try:
            return dict(api.inspect_container(container))
        except docker.errors.APIError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if pause is None or engine_answer(status, str(exc.explanation or "")) != "retry":
                raise
            time.sleep(pause)
    raise AssertionError("not reached")


class ContainerError(Upstream, RuntimeError):
    """No usable engine, or an engine command that failed (the message ends with its output,
    so API callers get a generic answer and the log gets the message)."""

    public = False


def run(
    command: Sequence[str | os.PathLike[str]], quiet: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a step; on failure raise ContainerError with the command and the end of its output.
    ``quiet`` captures the output (shown only on failure); otherwise it goes to the terminal."""
    args = [str(a) for a in command]
    capture = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if quiet else {}
    done = subprocess.run(args, text=True, check=False, **capture, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = (done.stdout or "")[-4000:]
        raise ContainerError(f"failed ({done.returncode}): {' '.join(args)}\n{tail}".rstrip())
    return done


@dataclass(frozen=True)
class Engine:
    """A container engine CLI: ``docker`` (BuildKit) or ``podman``, with its environment."""

    name: Literal["docker", "podman"]
    path: str
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str | os.PathLike[str]) -> list[str]:
        return [self.path, *map(str, args)]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(
        self, *args: str | os.PathLike[str], quiet: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return run(self.command(*args), env=self.environ(), quiet=quiet, **kwargs)

    def image_exists(self, tag: str) -> bool:
        inspect = self.command("image", "inspect", tag)
        return subprocess.run(inspect, env=self.environ(), capture_output=True).returncode == 0


def podman_env(conf: Path = PROJECT_CONTAINERS_CONF) -> dict[str, str]:
    """CONTAINERS_CONF for podman: an existing setting wins, else the project's file."""
    if "CONTAINERS_CONF" in os.environ or not conf.is_file():
        return {}
    return {"CONTAINERS_CONF": str(conf)}


def detect_engine(preferred: str | None = None) -> Engine:
    """``preferred`` (or $WERKHUB_CONTAINER_ENGINE), else docker when its daemon answers, else
    podman. A ``docker`` that is podman's shim counts as podman."""
    preferred = preferred or os.environ.get("WERKHUB_CONTAINER_ENGINE") or None
    for candidate in [preferred] if preferred else ["docker", "podman"]:
        path = shutil.which(candidate)
        if path is None:
            continue
        version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        if "podman" in version.lower():
            return Engine("podman", path, podman_env())
        if candidate != "docker":
            raise ContainerError(f"unsupported container engine '{candidate}' (docker or podman)")
        daemon = subprocess.run([path, "info"], capture_output=True, text=True, timeout=30)
        if daemon.returncode == 0:
            return Engine("docker", path, {"DOCKER_BUILDKIT": "1"})
        if preferred:
            raise ContainerError(f"docker's daemon does not answer: {daemon.stderr[-300:]}")
    raise ContainerError(f"no container engine: install {preferred or 'docker or podman'}")


def start_podman_service(
    engine: Engine, socket: Path, log: Path, timeout: float = 30
) -> subprocess.Popen[bytes]:
    """``podman system service --time=0 unix://SOCKET`` in its own session; ready when the
    socket answers. Stop it with ``process.terminate()`` (it is the caller's process)."""
    if engine.name != "podman":
        raise ContainerError("the API service is podman's; docker has its own daemon")
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            engine.command("system", "service", "--time=0", f"unix://{socket}"),
            env=engine.environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise ContainerError(f"podman system service did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return process
