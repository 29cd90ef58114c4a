"""Wiring of the job scheduler into the werkhub service (called from its lifespan)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from werkhub.config import load_config
from werkhub.configurer import MLFLOW_NAME, SERVICE_NAME
from werkhub.jobs.notify import Mailer
from werkhub.jobs.scheduler import Backend, Scheduler
from werkhub.jobs.store import JobStore
from werkhub.paths import StatePaths


def build_scheduler(
    manager: Any, inventory: dict[str, Any], auth: Any, prefix: str
) -> Scheduler | None:
    """The scheduler for this service from werkhub.yaml, or None when jobs are disabled."""
    cfg = load_config(os.environ.get("WERKHUB_CONFIG") or None)
    jobs = cfg.jobs
    if not jobs.enabled:
        return None
    state = StatePaths.at(os.environ.get("WERKHUB_STATE", ".werkhub"))
    runs_dir = Path(jobs.reports_dir).expanduser().resolve() if jobs.reports_dir else None
    store = JobStore(manager.writer, manager.reader, runs_dir or state.root / "jobs")
    base = cfg.hub.base_url
    mlflow_uri = ""
    if cfg.services.mlflow.enabled:
        mlflow_uri = f"http://127.0.0.1:{cfg.services.mlflow.port}{base}services/{MLFLOW_NAME}"
    templates = os.environ.get("WERKHUB_TEMPLATES") or cfg.services.werkhub.templates_dir
    docker_options: dict[str, Any] = {}
    if cfg.spawner.kind == "docker":
        docker_options = {
            "base_url": cfg.spawner.docker.url,
            "host_network": cfg.spawner.docker.loopback_host_network,
            "images": {name: e.image for name, e in cfg.spawner.images.items()},
            "default_image": cfg.spawner.default_image or next(iter(cfg.spawner.images)),
        }
    backend = Backend(
        kind=cfg.spawner.kind,
        homes=state.homes,
        kernel_name=jobs.kernel_name,
        mlflow_uri=mlflow_uri,
        service_url=f"http://127.0.0.1:{cfg.services.werkhub.port}{base}services/{SERVICE_NAME}/",
        docker_options=docker_options,
        templates_root=Path(templates)
        if templates
        else Path(__file__).resolve().parents[3] / "templates",
    )
    return Scheduler(
        store,
        backend,
        max_concurrent=jobs.max_concurrent,
        max_per_user=jobs.max_per_user,
        tick_seconds=jobs.tick_seconds,
        on_time_seconds=jobs.on_time_seconds,
        bookings=manager,
        inventory=inventory,
        auth=auth,
        mailer=Mailer(jobs.smtp),
        report_link=f"{cfg.hub.public_url}{prefix}/api/reports/",
        default_catch_up=jobs.catch_up,
        images=tuple(cfg.spawner.images),
    )
