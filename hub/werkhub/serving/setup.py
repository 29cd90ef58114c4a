"""Builds model serving for the werkhub service from its configuration: the store on the
service's database, the model source, the backend the site runs servers on, the
supervisor and the ``/endpoints/`` gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkhub.config.env import ServiceEnv
from werkhub.config.schema import WerkhubConfig
from werkhub.config.wiring import endpoints_prefix
from werkhub.sandbox.prepare import settings_from_env
from werkhub.serving.gateway import Gateway
from werkhub.serving.models import ModelSource
from werkhub.serving.replicas import Backend
from werkhub.serving.store import EndpointStore
from werkhub.serving.supervisor import Supervisor


@dataclass
class Serving:
    store: EndpointStore
    models: ModelSource
    supervisor: Supervisor
    gateway: Gateway


def backend_kind(cfg: WerkhubConfig) -> str:
    if cfg.serving.backend != "auto":
        return cfg.serving.backend
    return "docker" if cfg.spawner.kind == "docker" else "local"


def make_backend(cfg: WerkhubConfig) -> Backend:
    if backend_kind(cfg) == "docker":
        from werkhub.serving.docker import DockerBackend

        return DockerBackend.from_config(cfg)
    from werkhub.serving.local import LocalBackend

    return LocalBackend(settings_from_env())


def build(cfg: WerkhubConfig, env: ServiceEnv, bookings: Any, auth: Any) -> Serving:
    store = EndpointStore(bookings.writer, bookings.reader)
    models = ModelSource(env.state, shared=backend_kind(cfg) == "docker")

    async def groups_of(user: str) -> list[str]:
        details = await auth.user_details(user)
        return list((details or {}).get("groups") or [])

    supervisor = Supervisor(
        store,
        models,
        make_backend(cfg),
        cfg.serving,
        env.state.root / "endpoints" / "servers",
        bookings=bookings,
        groups_of=groups_of,
    )
    gateway = Gateway(
        endpoints_prefix(env.hub_base_url),
        supervisor,
        store,
        auth,
        cfg.serving.max_request_bytes,
    )
    supervisor.used_tokens = gateway.take_used
    return Serving(store, models, supervisor, gateway)
