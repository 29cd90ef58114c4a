"""Docker backend: DockerSpawner (works against Docker and podman's Docker API) with the
booked GPUs as device requests, limits, a named home volume per user, read-only shared
data, a non-root user and no privileges.

A container is gone only when the engine says so (404, or podman's "no such container"):
DockerSpawner takes any 500 from ``inspect`` for a dead server, forgets the container and
tells the hub it stopped, which left a running container with its booked GPUs that nobody
tracked any more (an engine busy for a moment answers 500 too). Here an engine error is
asked again, and when it persists the server counts as still running until the engine
can tell.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from docker.errors import APIError
from dockerspawner import DockerSpawner
from traitlets import Bool, Dict, Unicode, default

from werkhub.gpus.devices import GpuAssignment, docker_device_requests, gpu_environment
from werkhub.images.engine import ENGINE_RETRIES, engine_answer
from werkhub.spawners.booking import BookingSpawnerMixin
from werkhub.spawners.ready import PromptReadyMixin

HOME = "/home/jovyan"


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_config(device_requests: list[dict[str, Any]], shared: dict[str, str]) -> dict[str, Any]:
    """The security-relevant part of the container's host config (pure, tested)."""
    return {
        "device_requests": device_requests,
        "privileged": False,
        "init": True,  # reap zombies; the images have no init process
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": 4096,
        "mounts": [
            {"Type": "volume", "Source": volume, "Target": target, "ReadOnly": True}
            for volume, target in shared.items()
        ],
    }


class WerkhubDockerSpawner(BookingSpawnerMixin, PromptReadyMixin, DockerSpawner):
    """DockerSpawner that gives a container exactly its booking's GPUs (or none)."""

    image_refs = Dict(
        {}, help="Curated image name -> image reference, e.g. {'base': 'localhost/werkhub-base'}"
    ).tag(config=True)
    image_limits = Dict(
        {}, help="Curated image name -> {'mem_limit': '8G', 'cpu_limit': 4} (overrides)"
    ).tag(config=True)
    shared_data_volumes = Dict(
        {}, help="Named volumes mounted read-only into every server: volume -> path"
    ).tag(config=True)
    loopback_host_network = Bool(
        False,
        help="""Run on the host network bound to 127.0.0.1 with a free port (tests and
        single-machine setups without a bridge); production keeps a bridge network.""",
    ).tag(config=True)
    home_volume = Unicode("werkhub-home-{username}", help="Named volume of a user's home").tag(
        config=True
    )

    _device_requests: list[dict[str, Any]] = []
    _gpu_env: dict[str, str] = {}

    @default("allowed_images")
    def _allowed_default(self) -> dict[str, str]:
        # DockerSpawner checks user_options["image"] against this: our catalog names
        return dict(self.image_refs)

    @default("volumes")
    def _volumes_default(self) -> dict[str, str]:
        return {self.home_volume: HOME}

    @default("extra_create_kwargs")
    def _create_default(self) -> Any:
        return lambda spawner: {
            "user": "1000:100",
            "working_dir": HOME,
            # what the server was given, readable with `docker inspect` (podman accepts
            # device requests without a GPU runtime but does not show them)
            "labels": dict(spawner._labels),
        }

    @default("remove")
    def _remove_default(self) -> bool:
        return True  # the home volume keeps the files; containers are disposable

    @default("extra_host_config")
    def _host_config_default(self) -> Any:
        return lambda spawner: host_config(spawner._device_requests, spawner.shared_data_volumes)

    def apply_gpu_assignment(self, assignment: GpuAssignment | None) -> None:
        self._device_requests = docker_device_requests(assignment)
        self._gpu_env = gpu_environment(assignment, "docker")
        ids = [i for r in self._device_requests for i in r.get("DeviceIDs", [])]
        self._labels = {
            "werkhub.user": self.user.name,
            "werkhub.booking": str(assignment.booking_id) if assignment else "",
            "werkhub.devices": ",".join(ids),
        }

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.update(self._gpu_env)
        return env

    def get_args(self) -> list[str]:
        args = super().get_args()
        if self.loopback_host_network:
            args = [a for a in args if not a.startswith(("--ip=", "--port="))]
            args += ["--ip=127.0.0.1", f"--port={self.port}"]
        return args

    async def start(self) -> Any:
        if self.loopback_host_network:
            self.network_name = "host"
            self.use_internal_ip = True
            self.port = free_loopback_port()
        ip, port = await super().start()
        if not self.internal_ssl:
            await self.wait_until_answering(ip, port)
        return ip, port

    async def _alive(self) -> bool:
        return await self.poll() is None

    async def get_object(self) -> Any:
        """The container's inspect record, None when it is gone; an engine error is asked
        again, then raised (never taken for "gone", unlike DockerSpawner)."""
        for pause in (*ENGINE_RETRIES, None):
            try:
                found = await self.docker("inspect_container", self.object_name)
            except APIError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                verdict = engine_answer(status, str(exc.explanation or ""))
                if verdict == "gone":
                    self.object_id = ""
                    return None
                if verdict == "error" or pause is None:
                    raise
                await asyncio.sleep(pause)
                continue
            self.object_id = found[self.object_id_key]
            return found
        return None  # not reached: the last try returns or raises

    async def poll(self) -> Any:
        try:
            return await super().poll()
        except APIError as exc:
            # running as far as anyone knows: the hub asks again at its next check
            self.log.warning("cannot tell whether %s runs (%s)", self.object_name, exc)
            return None

    async def prepare_gpus(self) -> None:
        await super().prepare_gpus()
        name = self.spawn_options.image if self.spawn_options else self.default_image
        self.image = self.image_refs.get(name, name)
        limits = self.image_limits.get(name, {})
        if "mem_limit" in limits:
            self.mem_limit = limits["mem_limit"]
        if "cpu_limit" in limits:
            self.cpu_limit = float(limits["cpu_limit"])

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.loopback_host_network:
            return "127.0.0.1", self.port
        return await super().get_ip_and_port()
