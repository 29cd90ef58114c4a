"""Wiring of the job scheduler into the werkhub service (called from its lifespan)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from werkhub.config.env import ServiceEnv
from werkhub.config.schema import WerkhubConfig
from werkhub.config.wiring import MLFLOW_NAME, SERVICE_NAME
from werkhub.jobs.notify import Mailer
from werkhub.jobs.scheduler import Backend, Scheduler
from werkhub.jobs.store import JobStore


def docker_job_options(spawner: Any) -> dict[str, Any]:
    """Keyword arguments of ``docker_runner.run_in_container`` from werkhub.yaml's
    ``spawner`` section: a job's container gets what the owner's server would get (the
    curated images with their limits, the spawner's limits otherwise, the same network)."""
    docker = spawner.docker
    return {
        "base_url": docker.url,
        "host_network": docker.loopback_host_network,
        "network": None if docker.loopback_host_network else docker.network,
        **image_options(spawner),
    }


def image_options(spawner: Any) -> dict[str, Any]:
    """The curated images (name -> reference and limits) and the default image name."""
    images = {
        name: {
            "image": entry.image,
            "mem_limit": entry.mem_limit or spawner.mem_limit or None,
            "cpu_limit": entry.cpu_limit if entry.cpu_limit is not None else spawner.cpu_limit,
        }
        for name, entry in spawner.images.items()
    }
    return {"images": images, "default_image": spawner.default_image or next(iter(images))}


def slurm_job_options(cfg: WerkhubConfig) -> dict[str, Any]:
    """What runs as Slurm jobs need (:mod:`werkhub.jobs.run.slurm`), from ``slurm``."""
    section = cfg.slurm
    return {
        "conf": section.conf,
        "partition": section.partition,
        "cpu_partition": section.cpu_partition,
        "user_mapping": section.user_mapping.model_dump(),
        "create_users": section.create_users,
        "gpu_renames": {t.model: name for name, t in section.gpu_types.items() if t.model},
        "python": section.python or sys.executable,
        "command_timeout": section.command_timeout_seconds,
        "retry_seconds": section.retry_seconds,
        # what a server's job gets (spawner.environment), a run's job gets too
        "environment": {k: str(v) for k, v in cfg.spawner.environment.items()},
    }


def build_scheduler(
    cfg: WerkhubConfig, env: ServiceEnv, manager: Any, inventory: dict[str, Any], auth: Any
) -> Scheduler | None:
    """The scheduler for this service from werkhub.yaml, or None when jobs are disabled."""
    jobs = cfg.jobs
    if not jobs.enabled:
        return None
    state = env.state
    runs_dir = Path(jobs.reports_dir).expanduser().resolve() if jobs.reports_dir else None
    store = JobStore(
        manager.writer,
        manager.reader,
        runs_dir or state.root / "jobs",
        max_queued=jobs.max_queued_per_user,
    )
    base = cfg.hub.base_url
    mlflow_uri = ""
    if cfg.services.mlflow.enabled:
        mlflow_uri = f"http://127.0.0.1:{cfg.services.mlflow.port}{base}services/{MLFLOW_NAME}"
    templates = env.templates_dir or cfg.services.werkhub.templates_dir
    docker_options: dict[str, Any] = {}
    if cfg.spawner.kind == "docker":
        docker_options = docker_job_options(cfg.spawner)
    elif cfg.spawner.kind == "kubernetes":  # the manifest names the image too
        docker_options = image_options(cfg.spawner)
    slurm: dict[str, Any] = {}
    if cfg.spawner.kind == "slurm":
        slurm = slurm_job_options(cfg)
    backend = Backend(
        kind=cfg.spawner.kind,
        homes=state.homes,
        kernel_name=jobs.kernel_name,
        mlflow_uri=mlflow_uri,
        service_url=f"http://127.0.0.1:{cfg.services.werkhub.port}{base}services/{SERVICE_NAME}/",
        docker_options=docker_options,
        environment={k: str(v) for k, v in cfg.spawner.environment.items()},
        slurm=slurm,
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
        report_link=f"{cfg.hub.public_url}{env.prefix}/api/reports/",
        default_catch_up=jobs.catch_up,
        images=tuple(cfg.spawner.images),
    )
