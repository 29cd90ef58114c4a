"""What the hub tells a service process through its environment, read once at start-up.

The hub starts the werkhub service and the MLflow gateway with a handful of variables (the
state folder, ``werkhub.yaml``, the database, the service's prefix and address; see
``werkhub.app.configurer``). :func:`read_env` reads all of them, in one place, into a
:class:`ServiceEnv` that the process passes down; nothing else in a service reads
``WERKHUB_STATE`` or ``WERKHUB_CONFIG``. Pure apart from resolving the state folder's
path: no file is read or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from werkhub.config.paths import StatePaths
from werkhub.config.wiring import MLFLOW_NAME, SERVICE_NAME
from werkhub.errors import Misconfigured

#: the state folder when ``WERKHUB_STATE`` is not set (relative to the working directory)
DEFAULT_STATE = ".werkhub"
#: where each hub service listens when the hub gives no ``JUPYTERHUB_SERVICE_URL``
DEFAULT_URLS = {SERVICE_NAME: "http://127.0.0.1:10101", MLFLOW_NAME: "http://127.0.0.1:10102"}
DEFAULT_TICK_SECONDS = 30.0


class EnvError(Misconfigured, ValueError):
    """A variable holds something the service cannot use; the message names it."""


@dataclass(frozen=True)
class ServiceEnv:
    """One service process's view of its installation (see :func:`read_env`)."""

    #: the hub service's name (``werkhub`` or ``mlflow``)
    service: str
    state: StatePaths
    #: ``werkhub.yaml``; None: the built-in defaults
    config_file: Path | None
    #: the service's URL prefix without the trailing slash, e.g. ``/services/werkhub``
    prefix: str
    #: where the service listens (``JUPYTERHUB_SERVICE_URL``)
    url: str
    #: the hub's base URL, e.g. ``/`` (``JUPYTERHUB_BASE_URL``)
    hub_base_url: str = "/"
    #: the werkhub service's database (``WERKHUB_DB_URL``, else SQLite in the state folder)
    db_url: str = ""
    #: the starter templates folder (``WERKHUB_TEMPLATES``); None: the project's own
    templates_dir: Path | None = None
    #: how often bookings move through time and deleted users are looked for
    tick_seconds: float = DEFAULT_TICK_SECONDS
    #: one log line per request (``WERKHUB_ACCESS_LOG=1``)
    access_log: bool = False
    #: the gateway's MLflow server command (``WERKHUB_MLFLOW_SERVER``, a JSON list)
    mlflow_server: tuple[str, ...] = ()
    #: the private MLflow port (``WERKHUB_MLFLOW_INTERNAL_PORT``); 0: any free one
    mlflow_internal_port: int = 0
    #: MLflow's users and permissions (``WERKHUB_MLFLOW_AUTH_DB``)
    mlflow_auth_db: str = ""


def read_env(service: str = SERVICE_NAME, environ: Mapping[str, str] | None = None) -> ServiceEnv:
    """The environment of hub service ``service`` (``os.environ`` unless given)."""
    env = os.environ if environ is None else environ
    state = StatePaths.at(Path(env.get("WERKHUB_STATE") or DEFAULT_STATE).resolve())
    config = env.get("WERKHUB_CONFIG") or ""
    templates = env.get("WERKHUB_TEMPLATES") or ""
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{service}/"
    return ServiceEnv(
        service=service,
        state=state,
        config_file=Path(config) if config else None,
        prefix=prefix.rstrip("/"),
        url=env.get("JUPYTERHUB_SERVICE_URL")
        or DEFAULT_URLS.get(service, DEFAULT_URLS[SERVICE_NAME]),
        hub_base_url=env.get("JUPYTERHUB_BASE_URL", "/"),
        db_url=env.get("WERKHUB_DB_URL") or f"sqlite:///{state.service_db}",
        templates_dir=Path(templates) if templates else None,
        tick_seconds=_number(env, "WERKHUB_TICK_SECONDS", DEFAULT_TICK_SECONDS),
        access_log=env.get("WERKHUB_ACCESS_LOG", "") == "1",
        mlflow_server=_command(env, "WERKHUB_MLFLOW_SERVER"),
        mlflow_internal_port=_port(env, "WERKHUB_MLFLOW_INTERNAL_PORT"),
        mlflow_auth_db=env.get("WERKHUB_MLFLOW_AUTH_DB") or f"sqlite:///{state.mlflow / 'auth.db'}",
    )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise EnvError(f"{name}: not a number ({raw!r})") from None


def _port(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name) or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise EnvError(f"{name}: not a port number ({raw!r})")
    return int(raw)


def _command(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    if not raw:
        return ()
    try:
        argv = json.loads(raw)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise EnvError(f"{name}: not a JSON list of strings")
    return tuple(argv)
