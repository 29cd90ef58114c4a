"""The Docker backend: replicas as containers of the curated image, through the Docker
Engine API (Docker, or podman's Docker-compatible API).

The container is :func:`werkhub.serving.manifests.container_config`: the scoring server as
jovyan without privileges, the model read-only, the port on 127.0.0.1 only. Blocking
calls of the Docker SDK run in a thread (``asyncio.to_thread``); an engine error that
means "busy, ask again" (podman answers 500 for a moment under load) is asked again
(:data:`~werkhub.images.engine.ENGINE_RETRIES`), and a container is gone only when the
engine says so. Every container carries the endpoint's labels, so that a restarted
werkhub removes what it left behind (:meth:`DockerBackend.remove_leftovers`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkhub.images.engine import ENGINE_RETRIES, ContainerError, engine_answer
from werkhub.serving.manifests import container_config, container_name, leftover_filters
from werkhub.serving.replicas import Replica, ReplicaSpec

if TYPE_CHECKING:
    from werkhub.config.schema import WerkhubConfig

log = logging.getLogger("werkhub.serving.docker")

#: what :meth:`DockerBackend.exited` answers for a container someone else removed
GONE = -1
#: states of a container that has not ended
ALIVE = frozenset({"created", "configured", "initialized", "running", "paused", "restarting"})


def _verdict(exc: Exception) -> str:
    """:func:`engine_answer` of a Docker SDK error."""
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else 0
    return engine_answer(status, str(getattr(exc, "explanation", "") or exc))


class DockerBackend:
    """Starts and stops replicas as containers (the :class:`~werkhub.serving.replicas.Backend`
    protocol). ``base_url`` is the engine's API (``unix:///var/run/docker.sock``, podman's
    socket); ``image`` the curated image reference. ``host_network`` runs containers on the
    host's network bound to 127.0.0.1 (tests, hosts without a bridge); otherwise ``network``
    (default ``bridge``) with the port published on 127.0.0.1 only."""

    def __init__(
        self,
        base_url: str,
        image: str,
        *,
        host_network: bool = False,
        network: str | None = None,
        pids_limit: int = 1024,
        tmp_size: str = "256m",
        client: Any = None,
    ) -> None:
        self.base_url = base_url
        self.image = image
        self.host_network = host_network
        self.network = network
        self.pids_limit = pids_limit
        self.tmp_size = tmp_size
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: WerkhubConfig) -> DockerBackend:
        """The backend of ``werkhub.yaml``: the spawner's engine and network, and the image
        ``serving.image`` names among ``spawner.images`` (or as a reference itself)."""
        docker = cfg.spawner.docker
        entry = cfg.spawner.images.get(cfg.serving.image)
        return cls(
            docker.url,
            entry.image if entry is not None else cfg.serving.image,
            host_network=docker.loopback_host_network,
            network=docker.network,
        )

    # -- the engine ------------------------------------------------------------------------

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                self._client = docker.APIClient(base_url=self.base_url, version="auto")
            return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``APIClient.method(*args, **kwargs)``, asked again while the engine is busy."""
        from docker.errors import APIError

        call: Callable[..., Any] = getattr(self._api(), method)
        for pause in (*ENGINE_RETRIES, None):
            try:
                return call(*args, **kwargs)
            except APIError as exc:
                if pause is None or _verdict(exc) != "retry":
                    raise
                log.info("container engine busy (%s %s): %s; asking again", method, args, exc)
                time.sleep(pause)
        raise AssertionError("not reached")

    def _gone_ok(self, method: str, *args: Any, **kwargs: Any) -> bool:
        """The call, where a container that is already gone is fine (returns False)."""
        from docker.errors import APIError

        try:
            self._call(method, *args, **kwargs)
            return True
        except APIError as exc:
            if _verdict(exc) == "gone":
                return False
            raise

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- the Backend protocol --------------------------------------------------------------

    async def start(self, spec: ReplicaSpec) -> Replica:
        """Create and start the replica's container; returns once it was started (whether
        it answers is the supervisor's check of ``/ping``)."""
        config = container_config(
            spec,
            self.image,
            host_network=self.host_network,
            network=self.network,
            pids_limit=self.pids_limit,
            tmp_size=self.tmp_size,
        )
        container = await asyncio.to_thread(self._create_and_start, config, container_name(spec))
        return Replica(spec=spec, url=f"http://127.0.0.1:{spec.port}", handle=container)

    def _create_and_start(self, config: dict[str, Any], name: str) -> str:
        from docker.errors import APIError, DockerException

        try:
            try:
                container = self._call("create_container_from_config", config, name)["Id"]
            except APIError as exc:
                if exc.response is None or exc.response.status_code != 409:
                    raise
                # a container of the same name: a leftover of a crash, or of a create the
                # engine did although it answered 500; it must not keep the port
                log.warning("removing the earlier container %s", name)
                self._gone_ok("remove_container", name, force=True)
                container = self._call("create_container_from_config", config, name)["Id"]
        except DockerException as exc:
            raise ContainerError(f"cannot create the scoring container {name}: {exc}") from exc
        try:
            self._call("start", container)
        except DockerException as exc:
            try:
                self._gone_ok("remove_container", container, force=True)
            except DockerException as again:
                log.warning("could not remove container %s: %s", name, again)
            raise ContainerError(f"cannot start the scoring container {name}: {exc}") from exc
        return str(container)

    async def stop(self, replica: Replica, grace: float = 10.0) -> None:
        """Stop the container (SIGTERM, SIGKILL after ``grace`` seconds) and remove it."""
        await asyncio.to_thread(self._stop, str(replica.handle), grace)

    def _stop(self, container: str, grace: float) -> None:
        from docker.errors import DockerException

        try:
            if self._gone_ok("stop", container, timeout=max(0, math.ceil(grace))):
                self._gone_ok("remove_container", container, force=True)
        except DockerException as exc:
            raise ContainerError(f"cannot remove the scoring container {container}: {exc}") from exc

    async def exited(self, replica: Replica) -> int | None:
        """The container's exit code once it ended, :data:`GONE` when someone removed it,
        None while it runs (or while the engine cannot tell)."""
        return await asyncio.to_thread(self._exit_code, str(replica.handle))

    def _exit_code(self, container: str) -> int | None:
        from docker.errors import APIError, DockerException

        try:
            state = self._call("inspect_container", container)["State"]
        except APIError as exc:
            if _verdict(exc) == "gone":
                return GONE
            log.warning("cannot tell whether container %s runs: %s", container, exc)
            return None
        except DockerException as exc:
            log.warning("cannot tell whether container %s runs: %s", container, exc)
            return None
        if state.get("Running") or str(state.get("Status", "")).lower() in ALIVE:
            return None
        return int(state.get("ExitCode") or 0)

    def log_tail(self, replica: Replica, lines: int = 30) -> str:
        """The container's last ``lines`` lines of output ("" when there are none). One
        short request to the engine: the protocol makes this a plain call."""
        from docker.errors import DockerException

        try:
            raw = self._call("logs", str(replica.handle), stdout=True, stderr=True, tail=lines)
        except DockerException as exc:
            log.info("no log of container %s: %s", replica.handle, exc)
            return ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return "\n".join(text.splitlines()[-lines:])

    # -- clean-up --------------------------------------------------------------------------

    async def remove_leftovers(self, owner: str | None = None) -> int:
        """Remove every endpoint container of werkhub (of ``owner``), running or not: a
        restarted werkhub starts its replicas afresh. Returns how many were removed."""
        return await asyncio.to_thread(self._remove_leftovers, owner)

    def _remove_leftovers(self, owner: str | None) -> int:
        found = self._call("containers", all=True, filters=leftover_filters(owner))
        removed = 0
        for container in found:
            if self._gone_ok("remove_container", container["Id"], force=True):
                removed += 1
        return removed
