"""A replica is one running MLflow scoring server for one version of an endpoint's model.

Backends start and stop replicas; the supervisor decides when. Every backend serves the
model with MLflow's own scoring server (``mlflow.pyfunc.scoring_server``, run by uvicorn
as ``mlflow models serve --env-manager local`` does) and listens on a loopback port of
this machine only. This module holds the backend protocol, the pure command builders and
the embedded default: a sandboxed local process under the owner's uid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

#: the variable MLflow's scoring server app reads the model's folder from
MODEL_PATH_VAR = "__pyfunc_model_path__"
#: the scoring server's own limit on one request (seconds)
REQUEST_TIMEOUT_VAR = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
#: MLflow telemetry off in every scoring server (nothing leaves the site)
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
LOG_NAME = "server.log"


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a backend needs to start one scoring server."""

    endpoint_id: int
    owner: str
    name: str
    version: str
    #: the downloaded MLflow model (the folder holding ``MLmodel``); read-only for the server
    model_dir: Path
    #: loopback port the server listens on (chosen by the supervisor)
    port: int
    #: writable folder of this replica: its log and its home
    workdir: Path
    cpu: float | None = None
    memory: str | None = None
    gpu_type: str | None = None
    #: host GPU indexes of the endpoint's booking (empty: no GPU)
    gpu_indexes: tuple[int, ...] = ()
    request_timeout_s: int = 60
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.owner}-{self.name}-v{self.version}"


@dataclass
class Replica:
    spec: ReplicaSpec
    url: str
    #: backend-specific: a process, a container id
    handle: Any = None


class Backend(Protocol):
    """Starts and stops scoring servers; ``start`` returns once the process or container
    exists (readiness is the supervisor's check of ``/ping``)."""

    async def start(self, spec: ReplicaSpec) -> Replica: ...

    async def stop(self, replica: Replica, grace: float = 10.0) -> None: ...

    async def exited(self, replica: Replica) -> int | None:
        """The exit status once the server has ended, None while it runs."""
        ...

    def log_tail(self, replica: Replica, lines: int = 30) -> str: ...


def scoring_argv(python: str, host: str, port: int) -> list[str]:
    """The scoring server command (what ``mlflow models serve`` runs, without its shell)."""
    return [
        python,
        "-m",
        "uvicorn",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
        "mlflow.pyfunc.scoring_server.app:app",
    ]


def scoring_env(model_path: str, spec: ReplicaSpec) -> dict[str, str]:
    return {
        **spec.env,
        **QUIET_ENV,
        MODEL_PATH_VAR: model_path,
        REQUEST_TIMEOUT_VAR: str(spec.request_timeout_s),
        "PYTHONUNBUFFERED": "1",
        # MLflow 3 loads pickled (sklearn, cloudpickle) models only when told to: the
        # model is the owner's own, and the server runs in the owner's sandbox
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
    }


def tail(path: Path, lines: int = 30, limit: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
