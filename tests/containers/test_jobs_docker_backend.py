"""Jobs on the Docker backend through the whole service: a real werkhub (hub, proxy,
service, MLflow gateway) with ``spawner.kind: docker`` on podman's Docker API. A job created
over the REST API runs in a container of the owner's image with the owner's home volume
(the volume the Docker spawner gives their server), while their server is stopped; its
output notebook, report and MLflow run come back through the API, and the file the
notebook wrote is in the owner's home when their server starts again. A template job runs
the same way in its template's image."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.containers.conftest import BuiltImages
from tests.support.hub import Werkhub, make_werkhub, wait_run
from werkhub.images.catalog import SOURCE_ROOT
from werkhub.images.templates import discover_templates

API = "/services/werkhub/api"
TEMPLATES = {t.slug: t for t in discover_templates(SOURCE_ROOT / "templates")}
OWNER = "anna-b"  # a name the Docker spawner escapes: volume werkhub-home-anna-2db
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": ["parameters"]},
            "outputs": [],
            "source": "label = 'x'\nn = 2",
        },
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": (
                "import os, pathlib\n"
                "pathlib.Path('written.txt').write_text(f'{label} {n * 21}')\n"
                "user = os.environ['JUPYTERHUB_USER']\n"
                "print('uid', os.getuid(), 'cwd', os.getcwd(), 'user', user)"
            ),
        },
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, podman_api: Path, built_images: BuiltImages
) -> Iterator[Werkhub]:
    images = {
        "base": {"image": built_images.tags["base"], "mem_limit": "1G", "cpu_limit": 1},
        "pytorch": {"image": built_images.tags["pytorch"], "mem_limit": "2G"},
    }
    extra: dict[str, Any] = {
        "jobs": {"tick_seconds": 1, "max_concurrent": 2, "max_per_user": 2},
        "spawner": {
            "kind": "docker",
            "start_timeout": 120,
            "images": images,
            "default_image": "base",
            "docker": {"url": f"unix://{podman_api}", "loopback_host_network": True},
        },
    }
    werkhub = make_werkhub(tmp_path_factory.mktemp("docker-jobs"), extra)
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def token(hub: Werkhub, podman_api: Path) -> Iterator[str]:
    token = hub.create_user(OWNER)
    yield token
    client = docker.APIClient(base_url=f"unix://{podman_api}", version="auto")
    with contextlib.suppress(docker.errors.DockerException):
        client.remove_volume("werkhub-home-anna-2db", force=True)
    client.close()


def start_server(hub: Werkhub, token: str) -> None:
    with hub.client(token) as api:
        reply = api.post(f"/hub/api/users/{OWNER}/server", json={"image": "base"}, timeout=180)
        assert reply.status_code in (201, 202), reply.text
    hub.spawn(OWNER, token, timeout=180)


def contents(api: httpx.Client, path: str) -> httpx.Response:
    return api.get(f"/user/{OWNER}/api/contents/{path}", params={"content": 1}, timeout=60)


def mlflow_run(api: httpx.Client, run_id: str) -> tuple[dict[str, str], set[str], str]:
    """Tags, artifact paths and experiment name of an MLflow run, through the gateway."""
    ml = api.get("/services/mlflow/api/2.0/mlflow/runs/get", params={"run_id": run_id})
    assert ml.status_code == 200, ml.text
    run = ml.json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    listed = api.get("/services/mlflow/api/2.0/mlflow/artifacts/list", params={"run_id": run_id})
    assert listed.status_code == 200, listed.text
    paths = {f["path"] for f in listed.json().get("files", [])}
    experiment = api.get(
        "/services/mlflow/api/2.0/mlflow/experiments/get",
        params={"experiment_id": run["info"]["experiment_id"]},
    ).json()["experiment"]["name"]
    return tags, paths, experiment


def test_notebook_job_runs_in_the_owners_container_and_home(hub: Werkhub, token: str) -> None:
    start_server(hub, token)  # the owner puts a notebook into their home
    with hub.client(token) as api:
        made = api.put(f"/user/{OWNER}/api/contents/reports", json={"type": "directory"})
        assert made.status_code in (200, 201), made.text
        saved = api.put(
            f"/user/{OWNER}/api/contents/reports/daily.ipynb",
            json={"type": "notebook", "format": "json", "content": NOTEBOOK},
        )
        assert saved.status_code in (200, 201), saved.text
    hub.stop_server(OWNER, token)  # jobs do not need the owner's server

    with hub.client(token) as api:
        reply = api.post(
            f"{API}/jobs",
            json={
                "name": "daily",
                "notebook": "reports/daily.ipynb",
                "parameters": {"label": "from-job", "n": 2},
                "schedule": {"kind": "cron", "cron": "0 6 * * *"},
            },
        )
        assert reply.status_code == 201, reply.text
        job = reply.json()
        queued = api.post(f"{API}/jobs/{job['id']}/run")
        assert queued.status_code == 202, queued.text
        run = wait_run(api, queued.json()["id"], timeout=300)
        log = api.get(f"{API}/runs/{run['id']}/log").text
        assert run["status"] == "succeeded", (run, log)
        printed = json.dumps(api.get(f"{API}/runs/{run['id']}/notebook").json()["cells"])
        assert f"uid 1000 cwd /home/jovyan/reports user {OWNER}" in printed
        report = api.get(run["report_url"])
        assert report.status_code == 200 and "daily" in report.text
        assert "from-job" in report.text and "werkhub-status-succeeded" in report.text
        tags, artifacts, experiment = mlflow_run(api, run["mlflow_run_id"])
        assert tags["werkhub.job_id"] == str(job["id"])
        assert tags["werkhub.notebook"] == "reports/daily.ipynb"
        assert tags["werkhub.status"] == "succeeded"
        assert artifacts == {"output.ipynb", "report.html"}
        assert experiment == f"{OWNER}/jobs/daily"

    start_server(hub, token)  # the file the job wrote is in the owner's home
    try:
        with hub.client(token) as api:
            written = contents(api, "reports/written.txt")
            assert written.status_code == 200, written.text
            assert written.json()["content"] == "from-job 42"
    finally:
        hub.stop_server(OWNER, token)


def test_template_job_runs_in_the_templates_image(hub: Werkhub, token: str) -> None:
    with hub.client(token) as api:
        smoke = dict(TEMPLATES["predictive-maintenance"].spec.smoke_parameters)
        reply = api.post(
            f"{API}/jobs",
            json={"name": "pumps", "template": "predictive-maintenance", "parameters": smoke},
        )
        assert reply.status_code == 201, reply.text
        runs: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:  # "now" queues a run at once
            runs = api.get(f"{API}/jobs/{reply.json()['id']}/runs").json()
            time.sleep(0.5)
        assert runs, "no run queued"
        run = wait_run(api, runs[0]["id"], timeout=420)
        log = api.get(f"{API}/runs/{run['id']}/log").text
        said = "".join(ln for ln in hub.output[-400:] if "pumps" in ln or "werkhub.jobs" in ln)
        assert run["status"] == "succeeded", (run.get("error"), run, log, said)
        report = api.get(run["report_url"])
        assert report.status_code == 200 and "data:image/png;base64," in report.text
        tags, artifacts, experiment = mlflow_run(api, run["mlflow_run_id"])
        assert experiment == f"{OWNER}/predictive-maintenance"
        assert artifacts >= {"output.ipynb", "report.html"}
        assert tags["werkhub.owner"] == OWNER
