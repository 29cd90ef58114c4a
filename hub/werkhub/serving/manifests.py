"""Pure builders for a replica in a container: the Docker Engine API's create-container
body and the Kubernetes objects (Deployment, ClusterIP Service, NetworkPolicy), as plain
dicts tested without a daemon or cluster. Standard library, pydantic and the pure werkhub
modules only.

Both run MLflow's scoring server (:func:`~werkhub.serving.replicas.scoring_argv`) from
the curated image as its unprivileged user (jovyan, 1000:100), with no capabilities, no
privilege escalation, a read-only root file system (``/tmp`` and the home are scratch
space), the endpoint's CPU, memory and GPU limits, and the model read-only at ``/model``.

Docker: the model folder the supervisor downloaded is bind-mounted read-only; it must be
readable by uid 1000 (folders 0755, files 0644 inside a private state folder: a bind mount
does not look at the folders above it). On a bridge network the server listens on
``0.0.0.0:8080`` in the container and the port is published on ``127.0.0.1:<port>`` only;
on the host network (tests, single machines without a bridge) it binds
``127.0.0.1:<port>`` itself and nothing is published.

Kubernetes: the pod cannot see the hub's download, so the model reaches it in one of two
ways (see :class:`RegistryModel` and :class:`ClaimModel`); by default an init container of
the same image fetches ``models:/NAME/VERSION`` from the MLflow tracking server with a
token from a Secret into an ``emptyDir`` that the scoring container mounts read-only. A
NetworkPolicy lets only the gateway (the hub pod) in, and lets the pod out only to the
proxy (for MLflow) and DNS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from werkhub.errors import Invalid
from werkhub.gpus.devices import (
    CPU_ONLY_ENV,
    AssignedDevice,
    GpuAssignment,
    KubeResourceNames,
    docker_device_requests,
    kube_node_selector,
    kube_resources,
    kube_tolerations,
)
from werkhub.jobs.run.manifests import label_value
from werkhub.serving.replicas import QUIET_ENV, ReplicaSpec, scoring_argv, scoring_env
from werkhub.serving.spec import memory_bytes as parse_memory

UID, GID = 1000, 100
HOME = "/home/jovyan"
MODEL_DIR = "/model"
CONTAINER_PORT = 8080
COMPONENT = "endpoint"
#: the scoring server loads the owner's own model (pickled flavours need this since MLflow
#: 3.17); the container or pod is the sandbox that makes that acceptable
SANDBOX_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "HOME": HOME}
#: scratch space of a read-only root file system (exec allowed: JIT compilers load from it)
TMPFS_OPTIONS = "rw,exec,nosuid,nodev,size={size},mode=1777"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


class ManifestError(Invalid, ValueError):
    """A replica cannot be put into a container or pod as asked; the message says why."""


# ---- shared ------------------------------------------------------------------------------


def memory_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5Gi"`` -> bytes, as the endpoint's resources read them
    (binary units, as Docker and JupyterHub's ``mem_limit``)."""
    try:
        value = parse_memory(text)
    except ValueError as exc:
        raise ManifestError(str(exc), field="memory") from None
    if value <= 0:
        raise ManifestError(f"memory '{text}' must be more than nothing", field="memory")
    return value


def kube_quantity(size: int) -> str:
    """Bytes as an exact Kubernetes quantity, in the largest binary unit that divides it."""
    for suffix, unit in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _cpu(spec: ReplicaSpec) -> float | None:
    if spec.cpu is not None and spec.cpu <= 0:
        raise ManifestError(f"cpu must be positive (got {spec.cpu})", field="cpu")
    return spec.cpu


def dns_name(*parts: object, limit: int = 63) -> str:
    """A DNS-1123 (and DNS-1035) label from ``parts``: lowercase letters, digits and
    single dashes, at most ``limit`` characters. Put the identifying parts first: the
    end is what gets cut."""
    text = _NOT_DNS.sub("-", "-".join(str(p) for p in parts).lower()).strip("-")
    return re.sub("-{2,}", "-", text)[:limit].rstrip("-") or "werkhub"


def resource_name(spec: ReplicaSpec) -> str:
    """The Deployment's and Service's name: ``werkhub-ep<id>-v<version>-<owner>-<name>``,
    cut to 63 characters (id and version keep it unique; the rest is for people)."""
    return dns_name("werkhub-ep", spec.endpoint_id, f"v{spec.version}", spec.owner, spec.name)


def container_name(spec: ReplicaSpec) -> str:
    """The container's name; the port tells replicas of one version apart."""
    return dns_name(
        "werkhub-ep", spec.endpoint_id, f"v{spec.version}", f"p{spec.port}", spec.owner, spec.name
    )


def endpoint_labels(spec: ReplicaSpec, *, kube: bool = False) -> dict[str, str]:
    """Labels naming a replica's endpoint, owner and version, so that a restarted werkhub
    finds its leftovers. Docker keeps the values as they are (an exact owner filter);
    Kubernetes gets label-safe values."""
    value = label_value if kube else str
    return {
        "app.kubernetes.io/name": "werkhub",
        "app.kubernetes.io/component": COMPONENT,
        "werkhub.endpoint_id": str(spec.endpoint_id),
        "werkhub.owner": value(spec.owner),
        "werkhub.endpoint": value(spec.name),
        "werkhub.version": value(spec.version),
    }


def leftover_filters(owner: str | None = None) -> dict[str, list[str]]:
    """The Docker ``filters`` that list werkhub's endpoint containers (of ``owner``)."""
    labels = ["app.kubernetes.io/name=werkhub", f"app.kubernetes.io/component={COMPONENT}"]
    if owner is not None:
        labels.append(f"werkhub.owner={owner}")
    return {"label": labels}


def gpu_assignment(spec: ReplicaSpec, node: str = "local") -> GpuAssignment | None:
    """The endpoint's GPUs in the form the GPU builders take (None: CPU only). Whole GPUs
    by host index; a MIG type (``MODEL:PROFILE``) gives one slice per index. The booking id
    is not read by the builders and is left 0."""
    if not spec.gpu_indexes:
        return None
    gpu_type = spec.gpu_type or "gpu"
    model, _, profile = gpu_type.partition(":")
    devices = tuple(
        AssignedDevice(
            unit=f"{node}/{index}" + (f"/{profile}-{n}" if profile else ""),
            index=index,
            mig_profile=profile or None,
            mig_slice=n if profile else None,
        )
        for n, index in enumerate(spec.gpu_indexes)
    )
    return GpuAssignment(booking_id=0, gpu_type=gpu_type, model=model, node=node, devices=devices)


# ---- Docker ------------------------------------------------------------------------------


def container_config(
    spec: ReplicaSpec,
    image: str,
    *,
    host_network: bool = False,
    network: str | None = None,
    pids_limit: int = 1024,
    tmp_size: str = "256m",
) -> dict[str, Any]:
    """The body of the Docker Engine API's ``POST /containers/create`` for one replica (see
    the module notes). ``network`` names a bridge network (default ``bridge``);
    ``host_network`` runs on the host's network, bound to 127.0.0.1."""
    assignment = gpu_assignment(spec)
    if assignment is not None and assignment.mig_profile is not None:
        raise ManifestError(
            f"a container reaches a MIG slice ({spec.gpu_type}) only by its MIG id, which "
            "host GPU indexes do not give; serve MIG endpoints on Kubernetes",
            field="gpu_type",
        )
    requests = docker_device_requests(assignment)
    ids = [i for r in requests for i in r.get("DeviceIDs", [])]
    gpu_env = {"NVIDIA_VISIBLE_DEVICES": ",".join(ids)} if ids else dict(CPU_ONLY_ENV)
    host, port = ("127.0.0.1", spec.port) if host_network else ("0.0.0.0", CONTAINER_PORT)
    env = {**scoring_env(MODEL_DIR, spec), **SANDBOX_ENV, **gpu_env}
    tmpfs = TMPFS_OPTIONS.format(size=tmp_size)
    host_config: dict[str, Any] = {
        "Mounts": [
            {"Type": "bind", "Source": str(spec.model_dir), "Target": MODEL_DIR, "ReadOnly": True}
        ],
        "Tmpfs": {"/tmp": tmpfs, HOME: tmpfs},
        "ReadonlyRootfs": True,
        "Privileged": False,
        "Init": True,  # signals reach uvicorn, zombies are reaped
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "PidsLimit": pids_limit,
        "DeviceRequests": requests,
        "NetworkMode": "host" if host_network else (network or "bridge"),
        "RestartPolicy": {"Name": "no"},  # the supervisor restarts, with back-off
    }
    cpu = _cpu(spec)
    if cpu is not None:
        host_config["NanoCpus"] = int(cpu * 1e9)
    if spec.memory is not None:
        host_config["Memory"] = memory_bytes(spec.memory)
    config: dict[str, Any] = {
        "Image": image,
        "Cmd": scoring_argv("python", host, port),
        "User": f"{UID}:{GID}",
        "WorkingDir": HOME,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": {
            **endpoint_labels(spec),
            "werkhub.port": str(spec.port),
            "werkhub.devices": ",".join(ids),
        },
        # the image's own check is Jupyter's; the supervisor asks /ping itself
        "Healthcheck": {"Test": ["NONE"]},
        "HostConfig": host_config,
    }
    if not host_network:
        key = f"{CONTAINER_PORT}/tcp"
        config["ExposedPorts"] = {key: {}}
        host_config["PortBindings"] = {key: [{"HostIp": "127.0.0.1", "HostPort": str(spec.port)}]}
    return config


# ---- Kubernetes --------------------------------------------------------------------------


#: the fetch of the init container: ``models:/NAME/VERSION`` into the model folder
FETCH_SCRIPT = """\
import os, sys
import mlflow.artifacts
uri, dst = os.environ["WERKHUB_MODEL_URI"], os.environ["WERKHUB_MODEL_DIR"]
mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
if not os.path.isfile(os.path.join(dst, "MLmodel")):
    sys.exit(f"{uri}: the download has no MLmodel file")
print(f"fetched {uri}", flush=True)
"""


@dataclass(frozen=True)
class RegistryModel:
    """The default: an init container fetches the registered model version from MLflow.

    Works on any cluster (no shared storage); the scoring container mounts the fetched
    copy read-only. ``tracking_uri`` is MLflow as pods reach it (through the proxy in the
    shipped Helm values); the Secret ``token_secret`` holds, under ``token_key``, a hub
    token of the owner that may read the model (``access:services!service=mlflow``), sent
    as ``MLFLOW_TRACKING_TOKEN``. ``pod_labels`` let the pod reach the proxy under Zero to
    JupyterHub's network policies."""

    model_uri: str
    tracking_uri: str
    token_secret: str | None = None
    token_key: str = "token"
    size_limit: str = "10Gi"
    pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"hub.jupyter.org/network-access-proxy-http": "true"}
    )


@dataclass(frozen=True)
class ClaimModel:
    """The model folder on a PersistentVolumeClaim the hub writes its downloads to (a
    ReadWriteMany volume, or ReadWriteOnce with the pod on the hub's node), mounted
    read-only at ``sub_path``: no token and no network in the pod."""

    claim_name: str
    sub_path: str


ModelSource = RegistryModel | ClaimModel


def registry_model(spec: ReplicaSpec, tracking_uri: str, token_secret: str | None) -> RegistryModel:
    """The :class:`RegistryModel` of ``spec``'s model version (``models:/NAME/VERSION``)."""
    return RegistryModel(f"models:/{spec.name}/{spec.version}", tracking_uri, token_secret)


def service_url(spec: ReplicaSpec, namespace: str) -> str:
    """Where the gateway reaches the replica's Service inside the cluster."""
    return f"http://{resource_name(spec)}.{namespace}.svc:{CONTAINER_PORT}"


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": GID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/ping", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _resources(spec: ReplicaSpec, assignment: GpuAssignment | None, gpu: str) -> dict[str, Any]:
    names = KubeResourceNames(gpu=gpu)
    resources = kube_resources(assignment, names)
    cpu = _cpu(spec)
    for kind in ("limits", "requests"):
        if cpu is not None:
            resources[kind]["cpu"] = f"{round(cpu * 1000)}m"
        if spec.memory is not None:
            resources[kind]["memory"] = kube_quantity(memory_bytes(spec.memory))
    return resources


def _env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _model_parts(
    model: ModelSource, image: str, resources: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The model's volume, its read-only mount in the scoring container and the init
    containers that fill it."""
    if isinstance(model, ClaimModel):
        volume = {
            "name": "model",
            "persistentVolumeClaim": {"claimName": model.claim_name, "readOnly": True},
        }
        mount = {"name": "model", "mountPath": MODEL_DIR, "subPath": model.sub_path}
        return volume, {**mount, "readOnly": True}, []
    env = _env(
        {
            **QUIET_ENV,
            "HOME": "/tmp",
            "MLFLOW_TRACKING_URI": model.tracking_uri,
            "WERKHUB_MODEL_URI": model.model_uri,
            "WERKHUB_MODEL_DIR": MODEL_DIR,
        }
    )
    if model.token_secret:
        ref = {"name": model.token_secret, "key": model.token_key}
        env.append({"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    fetch = {
        "name": "fetch-model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-c", FETCH_SCRIPT],
        "env": env,
        "resources": {
            k: {r: q for r, q in v.items() if r in ("cpu", "memory")} for k, v in resources.items()
        },
        "securityContext": pod_security_context(),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volume = {"name": "model", "emptyDir": {"sizeLimit": model.size_limit}}
    return volume, {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}, [fetch]


def kubernetes_manifests(
    spec: ReplicaSpec,
    image: str,
    model: ModelSource,
    *,
    namespace: str = "werkhub",
    gpu_resource: str = "nvidia.com/gpu",
    node: str | None = None,
    product_names: Mapping[str, str] | None = None,
    gateway_labels: Mapping[str, str] | None = None,
    proxy_labels: Mapping[str, str] | None = None,
    tmp_size: str = "256Mi",
    network_policy: bool = True,
) -> list[dict[str, Any]]:
    """A Deployment (one replica), a ClusterIP Service and a NetworkPolicy for one replica.

    ``gpu_resource`` is the device plugin's resource of whole GPUs (a MIG type gets
    ``nvidia.com/mig-PROFILE``); ``node`` pins a GPU pod to the booked node and
    ``product_names`` maps a GPU type to GPU Feature Discovery's product label, as for
    servers. Only pods with ``gateway_labels`` (the hub pod) may connect; with a
    :class:`RegistryModel` the pod may reach pods with ``proxy_labels`` and DNS."""
    name = resource_name(spec)
    labels = endpoint_labels(spec, kube=True)
    labels["app.kubernetes.io/instance"] = name
    # the pods of this version of this endpoint, and no other
    selector = {k: v for k, v in labels.items() if k not in ("werkhub.owner", "werkhub.endpoint")}
    assignment = gpu_assignment(spec, node or "any")
    resources = _resources(spec, assignment, gpu_resource)
    volume, model_mount, init = _model_parts(model, image, resources)
    env = {**scoring_env(MODEL_DIR, spec), **SANDBOX_ENV}
    if assignment is None:
        env.update(CPU_ONLY_ENV)  # the device plugin exposes a GPU pod's devices
    container = {
        "name": "scoring",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": scoring_argv("python", "0.0.0.0", CONTAINER_PORT),
        "workingDir": HOME,
        "env": _env(env),
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        # loading a large model takes a while: the startup probe allows 10 minutes
        "startupProbe": _probe(5, 120),
        "readinessProbe": _probe(5, 3),
        "livenessProbe": _probe(15, 4),
        "resources": resources,
        "securityContext": pod_security_context(),
        "volumeMounts": [
            model_mount,
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "home", "mountPath": HOME},
        ],
    }
    pod_labels = {**labels, **(model.pod_labels if isinstance(model, RegistryModel) else {})}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": GID,
            "fsGroup": GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            volume,
            {"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}},
            {"name": "home", "emptyDir": {"sizeLimit": tmp_size}},
        ],
    }
    if init:
        pod_spec["initContainers"] = init
    node_selector = kube_node_selector(assignment, product_names=product_names)
    if node is None:
        node_selector.pop("kubernetes.io/hostname", None)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = kube_tolerations(assignment)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    metadata = {"name": name, "namespace": namespace, "labels": labels}
    objects = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": 1,
                "revisionHistoryLimit": 1,
                # never two pods of one version at once (they would need twice the GPUs)
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {
                        "name": "http",
                        "port": CONTAINER_PORT,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        },
    ]
    if network_policy:
        objects.append(_network_policy(metadata, selector, model, gateway_labels, proxy_labels))
    return objects


def _network_policy(
    metadata: Mapping[str, Any],
    selector: Mapping[str, str],
    model: ModelSource,
    gateway_labels: Mapping[str, str] | None,
    proxy_labels: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Ingress from the gateway only; egress to the proxy (MLflow) and DNS for a fetched
    model, none at all otherwise."""
    egress: list[dict[str, Any]] = []
    if isinstance(model, RegistryModel):
        dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        egress = [
            {
                "to": [
                    {"podSelector": {"matchLabels": dict(proxy_labels or {"component": "proxy"})}}
                ],
                "ports": [{"port": 8000, "protocol": "TCP"}],
            },
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                        }
                    }
                ],
                "ports": dns,
            },
        ]
    gateway = dict(gateway_labels or {"component": "hub"})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": dict(metadata),
        "spec": {
            "podSelector": {"matchLabels": dict(selector)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": gateway}}],
                    "ports": [{"port": CONTAINER_PORT, "protocol": "TCP"}],
                }
            ],
            "egress": egress,
        },
    }
