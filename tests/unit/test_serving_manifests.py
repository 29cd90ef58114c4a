"""Pure builders of endpoint replicas, asserted as dicts: the Docker create-container body
(non-root, no capabilities, read-only model and root, loopback-only port, limits, exactly
the endpoint's GPUs, labels) and the Kubernetes Deployment, Service and NetworkPolicy
(probes, security context, resources, names, how the model reaches the pod), checked
structurally as the API server would. Then the Docker backend against a fake engine:
busy answers asked again, a leftover of the same name replaced, "gone" only when gone."""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError

from werkhub.serving import docker as docker_backend
from werkhub.serving.docker import GONE, DockerBackend
from werkhub.serving.manifests import (
    FETCH_SCRIPT,
    ClaimModel,
    ManifestError,
    RegistryModel,
    container_config,
    container_name,
    kube_quantity,
    kubernetes_manifests,
    leftover_filters,
    memory_bytes,
    registry_model,
    resource_name,
    service_url,
)
from werkhub.serving.replicas import MODEL_PATH_VAR, Replica, ReplicaSpec

SPEC = ReplicaSpec(
    endpoint_id=7,
    owner="anna-b",
    name="churn",
    version="3",
    model_dir=Path("/srv/werkhub/serving/models/7/3"),
    port=41234,
    workdir=Path("/srv/werkhub/serving/replicas/7-3"),
    cpu=1.5,
    memory="2G",
    env={"EXTRA": "1"},
)
GPU_SPEC = replace(SPEC, gpu_type="H100", gpu_indexes=(2, 5))
IMAGE = "localhost/werkhub/base:latest"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config["Env"])


# ---- Docker ------------------------------------------------------------------------------


def test_container_is_unprivileged_with_a_read_only_model() -> None:
    config = container_config(SPEC, IMAGE)
    host = config["HostConfig"]
    assert config["Image"] == IMAGE
    assert config["User"] == "1000:100"
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == 1024
    assert host["RestartPolicy"] == {"Name": "no"}
    assert host["Mounts"] == [
        {"Type": "bind", "Source": str(SPEC.model_dir), "Target": "/model", "ReadOnly": True}
    ]
    assert set(host["Tmpfs"]) == {"/tmp", "/home/jovyan"}
    assert all("size=256m" in opts and "nosuid" in opts for opts in host["Tmpfs"].values())
    assert config["Healthcheck"] == {"Test": ["NONE"]}  # not the image's Jupyter check
    env = env_of(config)
    assert env[MODEL_PATH_VAR] == "/model"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["EXTRA"] == "1"
    assert env["HOME"] == "/home/jovyan"
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "true"


def test_port_is_published_on_loopback_only() -> None:
    config = container_config(SPEC, IMAGE)
    assert config["Cmd"][:3] == ["python", "-m", "uvicorn"]
    argv = config["Cmd"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # inside the container's own network
    assert argv[argv.index("--port") + 1] == "8080"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["HostConfig"]["NetworkMode"] == "bridge"
    assert config["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}]
    }
    named = container_config(SPEC, IMAGE, network="werkhub-endpoints")
    assert named["HostConfig"]["NetworkMode"] == "werkhub-endpoints"


def test_host_network_binds_loopback_itself() -> None:
    config = container_config(SPEC, IMAGE, host_network=True)
    argv = config["Cmd"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "41234"
    assert config["HostConfig"]["NetworkMode"] == "host"
    assert "PortBindings" not in config["HostConfig"] and "ExposedPorts" not in config


def test_limits() -> None:
    host = container_config(SPEC, IMAGE)["HostConfig"]
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == 2 * 1024**3
    bare = container_config(replace(SPEC, cpu=None, memory=None), IMAGE)["HostConfig"]
    assert "NanoCpus" not in bare and "Memory" not in bare
    with pytest.raises(ManifestError, match="cpu must be positive"):
        container_config(replace(SPEC, cpu=0), IMAGE)
    with pytest.raises(ManifestError, match="no memory size"):
        container_config(replace(SPEC, memory="lots"), IMAGE)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("2Gi", 2 * 1024**3),
        ("2GiB", 2 * 1024**3),
        ("1.5g", 3 * 1024**3 // 2),
        ("1048576", 1024**2),
        ("1t", 1024**4),
    ],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize("text", ["", "0", "0m", "-1G", "2x", "G"])
def test_memory_sizes_refused(text: str) -> None:
    with pytest.raises(ManifestError):
        memory_bytes(text)


def test_kube_quantity_is_exact() -> None:
    assert kube_quantity(2 * 1024**3) == "2Gi"
    assert kube_quantity(1536 * 1024**2) == "1536Mi"
    assert kube_quantity(1024**4) == "1Ti"
    assert kube_quantity(1000) == "1000"


def test_cpu_replica_sees_no_gpu() -> None:
    config = container_config(SPEC, IMAGE)
    assert config["HostConfig"]["DeviceRequests"] == []
    env = env_of(config)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert config["Labels"]["werkhub.devices"] == ""


def test_gpu_replica_gets_exactly_its_devices() -> None:
    config = container_config(GPU_SPEC, IMAGE)
    assert config["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["2", "5"], "Capabilities": [["gpu"]]}
    ]
    assert "Count" not in config["HostConfig"]["DeviceRequests"][0]  # never "all GPUs"
    env = env_of(config)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "2,5"
    assert "CUDA_VISIBLE_DEVICES" not in env  # CUDA numbers the container's devices from 0
    assert config["Labels"]["werkhub.devices"] == "2,5"
    with pytest.raises(ManifestError, match="MIG"):
        container_config(replace(GPU_SPEC, gpu_type="A100-80GB:3g.40gb"), IMAGE)


def test_labels_find_leftovers() -> None:
    labels = container_config(SPEC, IMAGE)["Labels"]
    assert labels == {
        "app.kubernetes.io/name": "werkhub",
        "app.kubernetes.io/component": "endpoint",
        "werkhub.endpoint_id": "7",
        "werkhub.owner": "anna-b",
        "werkhub.endpoint": "churn",
        "werkhub.version": "3",
        "werkhub.port": "41234",
        "werkhub.devices": "",
    }
    everyone = leftover_filters()["label"]
    assert all(f"{k}={labels[k]}" in everyone for k in ("app.kubernetes.io/component",))
    assert "werkhub.owner=anna-b" in leftover_filters("anna-b")["label"]
    assert not any(f.startswith("werkhub.owner") for f in everyone)


def test_names() -> None:
    assert container_name(SPEC) == "werkhub-ep-7-v3-p41234-anna-b-churn"
    assert resource_name(SPEC) == "werkhub-ep-7-v3-anna-b-churn"
    long = replace(SPEC, owner="o." + "x" * 60, name="Model_With.Dots" + "y" * 80, version="12")
    for name in (resource_name(long), container_name(long)):
        assert DNS_LABEL.match(name) and len(name) <= 63, name
    assert resource_name(long).startswith("werkhub-ep-7-v12-o-xxx")
    assert service_url(SPEC, "ml") == "http://werkhub-ep-7-v3-anna-b-churn.ml.svc:8080"


# ---- Kubernetes --------------------------------------------------------------------------


def objects(spec: ReplicaSpec = SPEC, **kwargs: Any) -> dict[str, dict[str, Any]]:
    model = kwargs.pop("model", None) or registry_model(
        spec, "http://proxy-public/services/mlflow/", "endpoint-7-token"
    )
    made = kubernetes_manifests(spec, IMAGE, model, namespace="ml", **kwargs)
    check_structure(made)
    return {o["kind"]: o for o in made}


def check_structure(made: list[dict[str, Any]]) -> None:
    """What the API server checks first: kinds and API versions, names, label syntax,
    a Deployment selector that matches its pods, a Service selecting those pods on a
    named port that exists, probes on that port, volume mounts of declared volumes."""
    kinds = {(o["apiVersion"], o["kind"]) for o in made}
    assert {("apps/v1", "Deployment"), ("v1", "Service")} <= kinds
    for obj in made:
        meta = obj["metadata"]
        assert DNS_LABEL.match(meta["name"]) and meta["namespace"] == "ml"
        for key, value in meta["labels"].items():
            assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
    deployment = next(o for o in made if o["kind"] == "Deployment")
    service = next(o for o in made if o["kind"] == "Service")
    template = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= template["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    pod = template["spec"]
    volumes = {v["name"] for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"])
    containers = pod["containers"] + pod.get("initContainers", [])
    assert len({c["name"] for c in containers}) == len(containers)
    for container in containers:
        assert DNS_LABEL.match(container["name"])
        assert {m["name"] for m in container["volumeMounts"]} <= volumes
        for item in container["env"]:
            assert set(item) in ({"name", "value"}, {"name", "valueFrom"})
            assert isinstance(item.get("value", ""), str)
    (scoring,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in scoring["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert scoring[probe]["httpGet"]["port"] in ports
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports


def test_deployment_runs_the_scoring_server_unprivileged() -> None:
    deployment = objects()["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    (scoring,) = pod["containers"]
    assert scoring["image"] == IMAGE
    argv = scoring["command"]
    assert argv[-1] == "mlflow.pyfunc.scoring_server.app:app"
    assert argv[argv.index("--port") + 1] == "8080"
    context = scoring["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert scoring[probe]["httpGet"]["path"] == "/ping"
    env = {e["name"]: e.get("value") for e in scoring["env"]}
    assert env[MODEL_PATH_VAR] == "/model"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    mounts = {m["mountPath"]: m for m in scoring["volumeMounts"]}
    assert mounts["/model"]["readOnly"] is True
    assert {"/tmp", "/home/jovyan"} <= set(mounts)


def test_resources_and_gpus() -> None:
    cpu = objects()["Deployment"]["spec"]["template"]["spec"]
    resources = cpu["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "0", "cpu": "1500m", "memory": "2Gi"}
    assert resources["requests"] == resources["limits"]
    assert "tolerations" not in cpu and "nodeSelector" not in cpu
    gpu = objects(GPU_SPEC, node="gpu-node-1", product_names={"H100": "NVIDIA-H100-80GB-HBM3"})
    pod = gpu["Deployment"]["spec"]["template"]["spec"]
    (scoring,) = pod["containers"]
    assert scoring["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert scoring["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert "NVIDIA_VISIBLE_DEVICES" not in {e["name"] for e in scoring["env"]}
    assert pod["nodeSelector"] == {
        "kubernetes.io/hostname": "gpu-node-1",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    (fetch,) = pod["initContainers"]
    assert "nvidia.com/gpu" not in fetch["resources"]["limits"]  # the download needs none
    unpinned = objects(GPU_SPEC)["Deployment"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in unpinned
    mig = objects(replace(GPU_SPEC, gpu_type="A100-80GB:3g.40gb"), gpu_resource="nvidia.com/gpu")
    limits = mig["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-3g.40gb"] == "2"


def test_registry_model_is_fetched_by_an_init_container() -> None:
    made = objects()
    pod = made["Deployment"]["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["image"] == IMAGE and fetch["command"][:2] == ["python", "-c"]
    assert fetch["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in fetch["env"]}
    assert env["WERKHUB_MODEL_URI"]["value"] == "models:/churn/3"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://proxy-public/services/mlflow/"
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "endpoint-7-token", "key": "token"}
    }
    model = next(v for v in pod["volumes"] if v["name"] == "model")
    assert model == {"name": "model", "emptyDir": {"sizeLimit": "10Gi"}}
    writable = next(m for m in fetch["volumeMounts"] if m["name"] == "model")
    assert not writable.get("readOnly")
    labels = made["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert labels["hub.jupyter.org/network-access-proxy-http"] == "true"
    # no token in the scoring container, only the read-only copy
    (scoring,) = pod["containers"]
    assert "MLFLOW_TRACKING_TOKEN" not in {e["name"] for e in scoring["env"]}


def test_claim_model_is_mounted_read_only() -> None:
    made = objects(model=ClaimModel("werkhub-models", "7/3"))
    pod = made["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    model = next(v for v in pod["volumes"] if v["name"] == "model")
    assert model["persistentVolumeClaim"] == {"claimName": "werkhub-models", "readOnly": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/model", "subPath": "7/3", "readOnly": True}
    policy = made["NetworkPolicy"]
    assert policy["spec"]["egress"] == []  # nothing to fetch: no way out


def test_service_and_network_policy() -> None:
    made = objects()
    service = made["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["name"] == made["Deployment"]["metadata"]["name"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    policy = made["NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"component": "hub"}}}]
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}]
    to = [rule["to"][0] for rule in policy["spec"]["egress"]]
    assert {"podSelector": {"matchLabels": {"component": "proxy"}}} in to
    assert len(to) == 2  # the proxy (MLflow) and DNS, nothing else
    assert "NetworkPolicy" not in objects(network_policy=False)


def test_versions_and_endpoints_never_share_pods() -> None:
    one = objects()["Deployment"]["spec"]["selector"]["matchLabels"]
    other_version = objects(replace(SPEC, version="4"))["Deployment"]["spec"]["selector"]
    other_endpoint = objects(replace(SPEC, endpoint_id=8))["Deployment"]["spec"]["selector"]
    assert one != other_version["matchLabels"] and one != other_endpoint["matchLabels"]
    assert one["werkhub.endpoint_id"] == "7" and one["werkhub.version"] == "3"


def test_fetch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The init container's script, run against a stand-in for ``mlflow.artifacts``."""
    calls: list[dict[str, str]] = []

    def download_artifacts(artifact_uri: str, dst_path: str) -> str:
        calls.append({"uri": artifact_uri, "dst": dst_path})
        if "good" in artifact_uri:
            Path(dst_path, "MLmodel").write_text("flavors: {}\n")
        return dst_path

    fake = types.ModuleType("mlflow.artifacts")
    fake.download_artifacts = download_artifacts  # type: ignore[attr-defined]
    parent = types.ModuleType("mlflow")
    parent.artifacts = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", parent)
    monkeypatch.setitem(sys.modules, "mlflow.artifacts", fake)
    script = tmp_path / "fetch.py"
    script.write_text(FETCH_SCRIPT)
    monkeypatch.setenv("WERKHUB_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("WERKHUB_MODEL_URI", "models:/good/1")
    runpy.run_path(str(script))
    assert calls == [{"uri": "models:/good/1", "dst": str(tmp_path)}]
    os.remove(tmp_path / "MLmodel")
    monkeypatch.setenv("WERKHUB_MODEL_URI", "models:/empty/1")
    with pytest.raises(SystemExit, match="no MLmodel"):
        runpy.run_path(str(script))


def test_registry_model_defaults() -> None:
    model = registry_model(SPEC, "http://mlflow:5000", None)
    assert model == RegistryModel("models:/churn/3", "http://mlflow:5000", None)
    pod = objects(model=model)["Deployment"]["spec"]["template"]["spec"]
    assert "MLFLOW_TRACKING_TOKEN" not in {e["name"] for e in pod["initContainers"][0]["env"]}


# ---- the Docker backend against a fake engine ----------------------------------------------


class Answer:
    def __init__(self, status: int) -> None:
        self.status_code, self.reason, self.url = status, "engine", "/containers"


def failure(status: int, explanation: str = "engine") -> APIError:
    return APIError(explanation, response=Answer(status), explanation=explanation)  # type: ignore[arg-type]


class FakeEngine:
    """Answers docker-py's APIClient calls from a script: method -> list of answers."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.asked.append((method, args, kwargs))
            queue = self.answers.get(method) or [None]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.asked]


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_backend, "ENGINE_RETRIES", (0, 0, 0))


def backend(engine: FakeEngine) -> DockerBackend:
    return DockerBackend("unix:///nowhere", IMAGE, client=engine)


def test_start_asks_a_busy_engine_again() -> None:
    engine = FakeEngine(
        {
            "create_container_from_config": [failure(500, "database is locked"), {"Id": "c1"}],
            "start": [failure(503), None],
        }
    )
    replica = asyncio.run(backend(engine).start(SPEC))
    assert replica.handle == "c1" and replica.url == "http://127.0.0.1:41234"
    assert engine.methods() == [
        "create_container_from_config",
        "create_container_from_config",
        "start",
        "start",
    ]
    config, name = engine.asked[0][1]
    assert name == container_name(SPEC) and config == container_config(SPEC, IMAGE)


def test_start_replaces_a_leftover_of_the_same_name() -> None:
    engine = FakeEngine(
        {"create_container_from_config": [failure(409, "name in use"), {"Id": "c2"}]}
    )
    assert asyncio.run(backend(engine).start(SPEC)).handle == "c2"
    assert engine.asked[1] == ("remove_container", (container_name(SPEC),), {"force": True})


def test_a_failed_start_removes_the_container() -> None:
    engine = FakeEngine(
        {"create_container_from_config": [{"Id": "c3"}], "start": [failure(400, "bad port")]}
    )
    with pytest.raises(docker_backend.ContainerError, match="cannot start"):
        asyncio.run(backend(engine).start(SPEC))
    assert engine.asked[-1] == ("remove_container", ("c3",), {"force": True})


def test_exited_reads_the_state() -> None:
    replica = Replica(spec=SPEC, url="http://127.0.0.1:41234", handle="c4")
    running = {"State": {"Running": True, "Status": "running", "ExitCode": 0}}
    ended = {"State": {"Running": False, "Status": "exited", "ExitCode": 3}}
    engine = FakeEngine({"inspect_container": [running, failure(500), ended]})
    made = backend(engine)
    assert asyncio.run(made.exited(replica)) is None
    assert asyncio.run(made.exited(replica)) == 3  # a busy engine was asked again
    engine.answers["inspect_container"] = [failure(404, "no such container")]
    assert asyncio.run(made.exited(replica)) == GONE
    # an engine that stays busy cannot tell: running as far as anyone knows
    engine.answers["inspect_container"] = [failure(500, "boom")]
    assert asyncio.run(made.exited(replica)) is None
    # podman's 500 "no such container" is gone, not busy
    engine.answers["inspect_container"] = [failure(500, "no such container: c4")]
    assert asyncio.run(made.exited(replica)) == GONE


def test_stop_and_leftovers_tolerate_gone_containers() -> None:
    replica = Replica(spec=SPEC, url="http://127.0.0.1:41234", handle="c5")
    engine = FakeEngine({"stop": [failure(404, "no such container")]})
    asyncio.run(backend(engine).stop(replica, grace=2.5))
    assert engine.asked == [("stop", ("c5",), {"timeout": 3})]  # nothing left to remove
    engine = FakeEngine(
        {
            "containers": [[{"Id": "a"}, {"Id": "b"}]],
            "remove_container": [None, failure(404, "no such container")],
        }
    )
    assert asyncio.run(backend(engine).remove_leftovers("anna-b")) == 1
    assert engine.asked[0] == (
        "containers",
        (),
        {"all": True, "filters": leftover_filters("anna-b")},
    )


def test_log_tail() -> None:
    replica = Replica(spec=SPEC, url="http://127.0.0.1:41234", handle="c6")
    engine = FakeEngine({"logs": [b"one\ntwo\nthree\n"]})
    assert backend(engine).log_tail(replica, lines=2) == "two\nthree"
    assert engine.asked[0][2]["tail"] == 2
    engine.answers["logs"] = [failure(404, "no such container")]
    assert backend(engine).log_tail(replica) == ""


def test_backend_from_config() -> None:
    docker = types.SimpleNamespace(
        url="unix:///run/podman.sock", loopback_host_network=True, network="bridge"
    )
    images = {"base": types.SimpleNamespace(image="registry.example.org/werkhub/base:1")}
    cfg = types.SimpleNamespace(
        spawner=types.SimpleNamespace(docker=docker, images=images),
        serving=types.SimpleNamespace(image="base"),
    )
    made = DockerBackend.from_config(cfg)  # type: ignore[arg-type]
    assert made.base_url == "unix:///run/podman.sock" and made.host_network is True
    assert made.image == "registry.example.org/werkhub/base:1"
    cfg.serving.image = "localhost/other:2"  # not a catalog name: the reference itself
    assert DockerBackend.from_config(cfg).image == "localhost/other:2"  # type: ignore[arg-type]
