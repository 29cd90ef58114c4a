"""Pure container builders for job runs, asserted as dicts: Docker create arguments (non-root,
no privileges, home volume, limits, exactly the booked devices) and the Kubernetes Job
manifest (GPU or MIG resources, node selector, toleration, backoffLimit 0, deadline)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from werkhub.gpus.devices import AssignedDevice, GpuAssignment
from werkhub.jobs.run.docker import resolve_image
from werkhub.jobs.run.manifests import (
    COMMAND,
    REQUEST_ENV,
    ContainerSpecError,
    container_request,
    docker_job_spec,
    kube_job_manifest,
)
from werkhub.jobs.run.notebook import RunRequest

HOME = "/srv/werkhub/homes/alice"
REQ: dict[str, Any] = {
    "run_id": 42,
    "job_id": 7,
    "job_name": "Morning report",
    "owner": "alice",
    "notebook": f"{HOME}/reports/daily.ipynb",
    "cwd": f"{HOME}/reports",
    "out_dir": "/srv/werkhub/jobs/runs/42",
    "parameters": {"n": 3},
    "deadline_s": 900,
    "env": {"MLFLOW_TRACKING_URI": "http://127.0.0.1:8000/services/mlflow"},
}


def inner(env: dict[str, str]) -> dict[str, Any]:
    return json.loads(env[REQUEST_ENV])


def test_request_gets_container_paths() -> None:
    moved = container_request(REQ, HOME)
    assert moved["notebook"] == "/home/jovyan/reports/daily.ipynb"
    assert moved["cwd"] == "/home/jovyan/reports"
    assert moved["out_dir"] == "/home/jovyan/.werkhub-jobs/42"
    assert moved["notebook_label"] == "reports/daily.ipynb"
    RunRequest.model_validate(moved)  # still a valid request
    by_label = container_request({**REQ, "notebook_label": "reports/daily.ipynb"}, None)
    assert by_label["notebook"] == moved["notebook"] and by_label["cwd"] == moved["cwd"]
    with pytest.raises(ContainerSpecError, match="not in the owner's home"):
        container_request({**REQ, "notebook": "/srv/werkhub/homes/bob/x.ipynb"}, HOME)
    with pytest.raises(ContainerSpecError, match="home folder on the host is not known"):
        container_request(REQ, None)
    with pytest.raises(ContainerSpecError, match="not a path in the home"):
        container_request({**REQ, "notebook_label": "../bob/x.ipynb"}, None)


def test_docker_cpu_job() -> None:
    spec = docker_job_spec(REQ, "werkhub/base:latest", "werkhub-home-alice", "2G", 1.5, home=HOME)
    assert spec["image"] == "werkhub/base:latest" and spec["command"] == COMMAND
    assert spec["user"] == "1000:100" and spec["working_dir"] == "/home/jovyan/reports"
    host = spec["host_config"]
    assert host["privileged"] is False and host["cap_drop"] == ["ALL"]
    assert host["security_opt"] == ["no-new-privileges"]
    assert host["mounts"] == [
        {
            "Type": "volume",
            "Source": "werkhub-home-alice",
            "Target": "/home/jovyan",
            "ReadOnly": False,
        }
    ]
    assert host["mem_limit"] == "2G" and host["nano_cpus"] == 1_500_000_000
    assert host["device_requests"] == [] and host["network_mode"] == "bridge"
    env = spec["environment"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert inner(env)["env"] == REQ["env"] and inner(env)["out_dir"].startswith("/home/jovyan/")
    assert spec["labels"]["werkhub.owner"] == "alice" and spec["labels"]["werkhub.devices"] == ""
    assert "MLFLOW_TRACKING_URI" not in env  # the runner applies req.env itself


def test_docker_gpu_job_names_devices() -> None:
    ids = ["GPU-aaaa-0", "MIG-bbbb"]
    spec = docker_job_spec(
        REQ,
        "werkhub/pytorch",
        "/data/homes/alice",
        device_ids=ids,
        home=HOME,
        host_network=True,
        home_is_path=True,
    )
    host = spec["host_config"]
    assert host["device_requests"] == [
        {"Driver": "nvidia", "DeviceIDs": ids, "Capabilities": [["gpu"]]}
    ]
    assert all(r.get("Count") != -1 for r in host["device_requests"])
    assert host["network_mode"] == "host" and host["mounts"][0]["Type"] == "bind"
    assert spec["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-aaaa-0,MIG-bbbb"
    assert spec["labels"]["werkhub.devices"] == "GPU-aaaa-0,MIG-bbbb"
    for bad in (["all"], ["-1"], [""]):
        with pytest.raises(ContainerSpecError, match="one by one"):
            docker_job_spec(REQ, "x", "v", device_ids=bad, home=HOME)
    with pytest.raises(ContainerSpecError, match="cpu_limit must be positive"):
        docker_job_spec(REQ, "x", "v", cpu_limit=0, home=HOME)


def assignment(mig: bool = False) -> GpuAssignment:
    device = AssignedDevice(
        unit="gpu-a/2/3g.40gb-1" if mig else "gpu-a/0",
        index=2 if mig else 0,
        uuid="GPU-x",
        mig_profile="3g.40gb" if mig else None,
        mig_slice=1 if mig else None,
    )
    return GpuAssignment(
        booking_id=5,
        gpu_type="A100-80GB:3g.40gb" if mig else "H100",
        model="A100-80GB" if mig else "H100",
        node="gpu-a",
        devices=(device,),
    )


def test_kube_cpu_job() -> None:
    manifest = kube_job_manifest(
        REQ, "registry.local/werkhub/base:1", home=HOME, mem_limit="4Gi", cpu_limit=2
    )
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert manifest["metadata"]["name"] == "werkhub-run-42"
    assert manifest["metadata"]["labels"]["werkhub.owner"] == "alice"
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 900
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["volumes"] == [
        {"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}
    ]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "0", "memory": "4Gi", "cpu": "2"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert inner(env)["notebook"] == "/home/jovyan/reports/daily.ipynb"
    assert container["volumeMounts"] == [{"name": "home", "mountPath": "/home/jovyan"}]


def test_kube_gpu_and_mig_jobs() -> None:
    whole = kube_job_manifest(REQ, "img", home=HOME, assignment=assignment(), claim_name="home-a")
    pod = whole["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-a"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "home-a"
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin decides
    mig = kube_job_manifest(REQ, "img", home=HOME, assignment=assignment(mig=True))
    limits = mig["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": "1"}


def test_resolve_image() -> None:
    images = {
        "base": "localhost/werkhub/base:latest",
        "pytorch": {"image": "w/pt:1", "mem_limit": "8G"},
    }
    assert resolve_image(None, images, "base") == ("localhost/werkhub/base:latest", {})
    assert resolve_image("pytorch", images, "base") == ("w/pt:1", {"mem_limit": "8G"})
    assert resolve_image("other:tag", images, "base") == ("other:tag", {})
