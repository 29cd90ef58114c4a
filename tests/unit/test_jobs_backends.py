"""What the scheduler hands the container backends, as plain data: the Docker runner's
options from werkhub.yaml (curated images with limits, network), the owner's home volume
named as the Docker spawner names it, the Kubernetes Job of a CPU and of a GPU job with the
job's image resolved, per-owner MLflow experiment names, and the REST addresses of a run's
artifacts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from dockerspawner import DockerSpawner

from werkhub.config.schema import GpusSection, SpawnerSection
from werkhub.gpus.inventory import describe
from werkhub.jobs.mlflow_run import RestClient
from werkhub.jobs.planning import in_container, kube_memory, owned_experiment
from werkhub.jobs.run.docker import home_volume_name
from werkhub.jobs.scheduler import Backend, Scheduler
from werkhub.jobs.setup import docker_job_options, image_options
from werkhub.jobs.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SPAWNER = SpawnerSection.model_validate(
    {
        "kind": "docker",
        "mem_limit": "2G",
        "images": {
            "base": {"image": "localhost/werkhub/base:1", "mem_limit": "768m", "cpu_limit": 1},
            "pytorch": {"image": "localhost/werkhub/pytorch:1"},
        },
        "docker": {"url": "unix:///run/podman.sock", "loopback_host_network": True},
    }
)
INVENTORY = describe(
    GpusSection.model_validate(
        {
            "nodes": [
                {
                    "name": "gpu-a",
                    "devices": [
                        {"index": 0, "uuid": "GPU-aaaa", "model": "H100", "memory_gb": 80},
                        {"index": 1, "uuid": "GPU-bbbb", "model": "H100", "memory_gb": 80},
                    ],
                }
            ]
        }
    )
)
REQUEST: dict[str, Any] = {
    "run_id": 12,
    "job_id": 3,
    "job_name": "nightly",
    "owner": "anna",
    "notebook": "reports/daily.ipynb",
    "notebook_label": "reports/daily.ipynb",
    "cwd": ".",
    "out_dir": "/srv/werkhub/jobs/runs/12",
    "parameters": {},
    "deadline_s": 600,
    "env": {},
}


def scheduler(kind: str) -> Scheduler:
    options = docker_job_options(SPAWNER) if kind == "docker" else image_options(SPAWNER)
    backend = Backend(kind=kind, docker_options=options, templates_root=ROOT / "templates")
    return Scheduler(None, backend, inventory=INVENTORY)  # type: ignore[arg-type]


def test_docker_options_follow_the_spawner_section() -> None:
    options = docker_job_options(SPAWNER)
    assert options == {
        "base_url": "unix:///run/podman.sock",
        "host_network": True,
        "network": None,
        "images": {
            "base": {"image": "localhost/werkhub/base:1", "mem_limit": "768m", "cpu_limit": 1},
            # no limit of its own: the spawner's limits apply, as for the owner's server
            "pytorch": {
                "image": "localhost/werkhub/pytorch:1",
                "mem_limit": "2G",
                "cpu_limit": None,
            },
        },
        "default_image": "base",
    }
    bridge = SPAWNER.model_copy(
        update={
            "docker": SPAWNER.docker.model_copy(
                update={"loopback_host_network": False, "network": "werkhub"}
            )
        }
    )
    assert docker_job_options(bridge)["network"] == "werkhub"


@pytest.mark.parametrize("owner", ["anna", "anna-b", "Bert.K", "x_y"])
def test_home_volume_is_the_spawners(owner: str) -> None:
    spawner_name = f"werkhub-home-{DockerSpawner._escape(owner)}"
    assert home_volume_name("werkhub-home-{username}", owner) == spawner_name
    assert home_volume_name("werkhub-home-anna-b", "x") == "werkhub-home-anna-b"
    assert home_volume_name("werkhub-home-{username}", "anna-b") == "werkhub-home-anna-2db"


def test_docker_gpu_job_gets_exactly_its_devices() -> None:
    booking = {"id": 5, "devices": ["gpu-a/1"], "count": 1, "gpu_type": "H100"}
    assert scheduler("docker")._device_ids(booking) == ["GPU-bbbb"]


def test_kube_manifest_of_a_cpu_job_names_the_default_image() -> None:
    spec = parse_spec({"name": "nightly", "notebook": "reports/daily.ipynb"})
    manifest = scheduler("kubernetes")._manifest(REQUEST, spec)
    assert "error" not in manifest, manifest
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "localhost/werkhub/base:1"  # never an empty image
    assert container["resources"]["limits"] == {
        "nvidia.com/gpu": "0",
        "memory": "768Mi",  # Docker's binary "m", not Kubernetes' milli
        "cpu": "1",
    }
    assert "nodeSelector" not in pod
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "claim-anna"


def test_kube_manifest_of_a_gpu_job_books_its_devices() -> None:
    spec = parse_spec(
        {
            "name": "train",
            "notebook": "train.ipynb",
            "image": "pytorch",
            "gpu": {"type": "H100", "count": 1, "minutes": 30},
        }
    )
    booking = {"id": 6, "devices": ["gpu-a/0"], "count": 1, "gpu_type": "H100"}
    manifest = scheduler("kubernetes")._manifest(REQUEST, spec, booking)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "localhost/werkhub/pytorch:1"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "2Gi"}
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-a"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_template_jobs_run_in_their_templates_image() -> None:
    spec = parse_spec({"name": "qi", "template": "quality-inspection"})
    assert scheduler("docker").image_name(spec) == "pytorch"  # template.yaml's image
    assert scheduler("kubernetes").image_of(spec)[0] == "localhost/werkhub/pytorch:1"
    own = parse_spec({"name": "qi", "template": "quality-inspection", "image": "base"})
    assert scheduler("docker").image_name(own) == "base"


def test_template_request_points_into_the_home_volume() -> None:
    out = Path("/srv/werkhub/jobs/runs/12")
    request = {
        **REQUEST,
        "notebook": str(out / "work/quality-inspection/inspection.ipynb"),
        "cwd": str(out / "work/quality-inspection"),
        "parameters": {"results_path": str(out / "results.json"), "epochs": 1},
    }
    in_container(request, out)
    assert request["notebook_label"] == ".werkhub-jobs/12/work/quality-inspection/inspection.ipynb"
    assert request["parameters"] == {
        "results_path": "/home/jovyan/.werkhub-jobs/12/results.json",
        "epochs": 1,
    }


def test_experiments_belong_to_their_owner() -> None:
    assert owned_experiment("anna", "quality-inspection") == "anna/quality-inspection"
    assert owned_experiment("ben", "quality-inspection") == "ben/quality-inspection"
    assert owned_experiment("anna", "anna/jobs/nightly") == "anna/jobs/nightly"


def test_kube_memory() -> None:
    assert [kube_memory(v) for v in ("512m", "8G", "1024", "2g", None, "")] == [
        "512Mi",
        "8Gi",
        "1024",
        "2Gi",
        None,
        None,
    ]
    # forms Docker accepts that are no Kubernetes quantity as written
    assert [kube_memory(v) for v in ("2GB", "1.5g", "0.5t")] == ["2Gi", "1536Mi", "512Gi"]


def test_artifact_addresses() -> None:
    rest = RestClient("http://127.0.0.1:8000/services/mlflow/", environ={})
    try:
        assert rest.artifact_url("mlflow-artifacts:/4/abc/artifacts", "report.html") == (
            "http://127.0.0.1:8000/services/mlflow/api/2.0/mlflow-artifacts/artifacts/"
            "4/abc/artifacts/report.html"
        )
        assert rest.artifact_url("http://127.0.0.1:9/a/b", "x y.ipynb") == (
            "http://127.0.0.1:9/a/b/x%20y.ipynb"
        )
        assert rest.artifact_url("s3://bucket/4/abc/artifacts", "report.html") is None
        assert rest.artifact_url("/srv/mlruns/4/abc/artifacts", "report.html") is None
    finally:
        rest.close()
    plain = RestClient("http://127.0.0.1:5000", environ={})
    assert plain.artifact_url("mlflow-artifacts:/1/r/artifacts", "a.html") == (
        "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.html"
    )
    plain.close()


def test_identity_headers() -> None:
    token = RestClient("http://h", environ={"MLFLOW_TRACKING_TOKEN": "tok"})
    assert token.http.headers["Authorization"] == "Bearer tok"
    token.close()
    basic = RestClient(
        "http://h",
        environ={"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"},
    )
    assert "Authorization" not in basic.http.headers and basic.http.auth is not None
    basic.close()


def test_runs_get_the_servers_environment_but_keep_their_identity() -> None:
    backend = Backend(
        mlflow_uri="http://127.0.0.1:5000/services/mlflow",
        service_url="http://127.0.0.1:8001/services/werkhub/",
        environment={
            "MLFLOW_TRACKING_URI": "http://mlflow.werkhub.internal/services/mlflow",
            "PIP_INDEX_URL": "http://pypi.werk.local/simple",
            "JUPYTERHUB_USER": "admin",
            "WERKHUB_RUN_ID": "1",
        },
    )
    run = {"id": 12, "job_id": 3, "owner": "anna"}
    spec = parse_spec({"name": "nightly", "notebook": "a.ipynb"})
    env = asyncio.run(Scheduler(None, backend)._environment(run, spec, None))  # type: ignore[arg-type]
    assert env == {
        "WERKHUB_SERVICE_URL": "http://127.0.0.1:8001/services/werkhub/",
        "MLFLOW_TRACKING_URI": "http://mlflow.werkhub.internal/services/mlflow",
        "PIP_INDEX_URL": "http://pypi.werk.local/simple",
        "JUPYTERHUB_USER": "anna",
        "WERKHUB_JOB_ID": "3",
        "WERKHUB_RUN_ID": "12",
    }


def test_kept_manifests_and_requests_hold_no_token(tmp_path: Path) -> None:
    from werkhub.jobs.run import launch

    request = {**REQUEST, "env": {"MLFLOW_TRACKING_TOKEN": "tok-secret", "LANG": "C"}}
    spec = parse_spec({"name": "nightly", "notebook": "reports/daily.ipynb"})
    manifest = scheduler("kubernetes")._manifest(request, spec)
    assert "tok-secret" in json.dumps(manifest)  # what a cluster would get
    request["out_dir"] = str(tmp_path)
    outcome = launch.run_kubernetes(request, manifest)
    assert outcome.status == "failed" and "Kubernetes cluster" in (outcome.error or "")
    for name in ("job-manifest.json", "request.json"):
        text = (tmp_path / name).read_text()
        assert "tok-secret" not in text and "(hidden)" in text, name
    kept = json.loads((tmp_path / "job-manifest.json").read_text())
    (container,) = kept["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/werkhub/base:1"
    assert (tmp_path / "request.json").stat().st_mode & 0o077 == 0


def test_a_runs_mlflow_token_is_tried_again_while_the_hub_is_away_not_when_it_refuses() -> None:
    import httpx
    from fastapi import HTTPException

    from werkhub.jobs.scheduler import MINT_ATTEMPTS, mint_job_token

    def minter(failures: list[Exception]) -> tuple[Any, list[dict[str, Any]]]:
        calls: list[dict[str, Any]] = []

        async def mint(owner: str, **kwargs: Any) -> str:
            calls.append({"owner": owner, **kwargs})
            if failures:
                raise failures.pop(0)
            return "minted"

        return mint, calls

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    away = httpx.ConnectError("connection refused")
    mint, calls = minter([away, HTTPException(502, "the hub timed out")])
    assert asyncio.run(mint_job_token(mint, "ana", 300, sleep)) == "minted"
    assert len(calls) == 3 and slept == [1, 2]
    assert calls[0]["expires_in"] == 3900 and "access:services!service=mlflow" in calls[0]["scopes"]

    slept.clear()
    mint, calls = minter([HTTPException(403, "the hub refused a token for ana")])
    assert asyncio.run(mint_job_token(mint, "ana", 300, sleep)) is None
    assert len(calls) == 1 and slept == []  # a refusal is final

    mint, calls = minter([away] * MINT_ATTEMPTS)
    assert asyncio.run(mint_job_token(mint, "ana", 300, sleep)) is None
    assert len(calls) == MINT_ATTEMPTS
