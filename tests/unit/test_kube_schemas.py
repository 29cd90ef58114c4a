"""Every Kubernetes object werkhub builds, validated offline against the Kubernetes API's
own OpenAPI schema, as JSON Schema from the ``kubernetes-validate`` package (its "strict"
form: an unknown or misspelt field is an error, as ``kubectl apply --validate=strict`` and
the API server's strict field validation make it), for every Kubernetes minor from 1.28
(the floor of the Zero to JupyterHub 4.4.0 chart, ``kubeVersion: >=1.28.0-0``) to 1.37 (the
newest the package ships). No cluster is involved.

The schema says nothing about what the API server checks beyond field names and types, so
:func:`server_rules` adds the checks that break most often: object, container, volume and
port names, label keys and values, resource quantities, and no ``null`` values.

The builders: user server pods and home PVCs (``WerkhubKubeSpawner``, through KubeSpawner's
own ``get_pod_manifest`` and ``get_pvc_manifest``, serialised by the Kubernetes client as it
sends them), job-run Jobs (``werkhub.jobs.run.manifests.kube_job_manifest``, with the job
limits the scheduler passes) and model-endpoint Deployments, Services and NetworkPolicies
(``werkhub.serving.manifests.kubernetes_manifests``); each for CPU, whole GPUs and a MIG
slice. ``hub/helm/values.yaml`` is checked against the chart's schema in
``test_helm_values.py``."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient
from referencing import Registry, Resource
from traitlets.config import Config

from werkhub.gpus.devices import AssignedDevice, GpuAssignment, KubeResourceNames
from werkhub.jobs.planning import kube_memory, whole
from werkhub.jobs.run.manifests import kube_job_manifest
from werkhub.serving.manifests import ClaimModel, kubernetes_manifests, registry_model
from werkhub.serving.replicas import ReplicaSpec
from werkhub.spawners.kube import WerkhubKubeSpawner

#: Kubernetes minors validated against: the chart's floor to the newest the package ships
KUBE_VERSIONS = tuple(f"1.{minor}" for minor in range(28, 38))
SCHEMAS = files("kubernetes_validate") / "kubernetes-json-schema"

Obj = dict[str, Any]


# ---- the schema --------------------------------------------------------------------------


@functools.cache
def _definitions(version: str) -> Registry:
    folder = SCHEMAS / f"v{version}.0-local-strict"
    if not folder.is_dir():
        raise LookupError(f"kubernetes-validate ships no schema of Kubernetes {version}")
    defs = json.loads((folder / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    """The strict schema of one kind (the file naming of ``kubernetes_validate.validate``:
    ``deployment-apps-v1.json``, ``networkpolicy-networking-v1.json``, ``pod-v1.json``)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = SCHEMAS / f"v{version}.0-local-strict" / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        raise LookupError(f"Kubernetes {version} has no {kind} in {api_version}")
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_definitions(version))


def schema_errors(obj: Obj, version: str) -> list[str]:
    """Every way ``obj`` breaks the strict OpenAPI schema of Kubernetes ``version``."""
    validator = _validator(version, obj["apiVersion"], obj["kind"])
    return [
        f"{obj['kind']} {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]


# ---- what the API server checks beyond the schema ---------------------------------------

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
#: resource.Quantity: a decimal number with a binary or decimal SI suffix or an exponent
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")


def _label_errors(labels: dict[str, Any], where: str) -> Iterator[str]:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and not (len(prefix) <= 253 and DNS_SUBDOMAIN.fullmatch(prefix)):
            yield f"{where}: label key prefix {prefix!r}"
        if not (len(name) <= 63 and LABEL_NAME.fullmatch(name)):
            yield f"{where}: label key {key!r}"
        if not (isinstance(value, str) and len(value) <= 63) or (
            value and not LABEL_NAME.fullmatch(value)
        ):
            yield f"{where}: label value {value!r}"


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _walk(item, f"{path}[{n}]")


def _quantity_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or bool(QUANTITY.fullmatch(str(value)))


def server_rules(obj: Obj) -> list[str]:
    """The API server's validation that the schema leaves out, for the fields werkhub's
    objects use: names (DNS-1123 labels for Services, containers, volumes; subdomains
    otherwise), label syntax, named ports (at most 15 characters), quantities, no null."""
    errors: list[str] = []
    kind, meta = obj["kind"], obj.get("metadata") or {}
    name = meta.get("name", "")
    if kind == "Service":
        name_ok = len(name) <= 63 and DNS_LABEL.fullmatch(name)
    else:
        name_ok = len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name)
    if not name_ok:
        errors.append(f"{kind} name {name!r}")
    for path, value in _walk(obj, kind):
        if value is None:
            errors.append(f"{path}: null")
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("labels"), dict):
            errors.extend(_label_errors(value["labels"], f"{path}.labels"))
        if isinstance(value.get("matchLabels"), dict):
            errors.extend(_label_errors(value["matchLabels"], f"{path}.matchLabels"))
        for section in ("limits", "requests"):
            for resource, quantity in (value.get(section) or {}).items():
                if not _quantity_ok(quantity):
                    errors.append(f"{path}.{section}.{resource}: quantity {quantity!r}")
        if "sizeLimit" in value and not _quantity_ok(value["sizeLimit"]):
            errors.append(f"{path}.sizeLimit: quantity {value['sizeLimit']!r}")
    pod = _pod_spec(obj)
    if pod is not None:
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in containers:
            if not (len(c["name"]) <= 63 and DNS_LABEL.fullmatch(c["name"])):
                errors.append(f"container name {c['name']!r}")
            for port in c.get("ports", []):
                if "name" in port and not (
                    len(port["name"]) <= 15 and PORT_NAME.fullmatch(port["name"])
                ):
                    errors.append(f"port name {port['name']!r}")
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    errors.append(f"container {c['name']} mounts undeclared {mount['name']!r}")
        names = [c["name"] for c in containers]
        if len(set(names)) != len(names):
            errors.append(f"container names repeat: {names}")
        for v in volumes:
            if not (len(v) <= 63 and DNS_LABEL.fullmatch(v)):
                errors.append(f"volume name {v!r}")
    return errors


def _pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] == "Pod":
        spec: Obj = obj["spec"]
        return spec
    template = (obj.get("spec") or {}).get("template")
    return template["spec"] if template else None


def assert_valid(objects: list[Obj], version: str) -> None:
    errors = [e for obj in objects for e in schema_errors(obj, version) + server_rules(obj)]
    assert errors == [], f"Kubernetes {version}:\n" + "\n".join(errors)


# ---- bookings ----------------------------------------------------------------------------


def gpus(mig: bool = False) -> GpuAssignment:
    device = AssignedDevice(
        unit="gpu-a/2/3g.40gb-1" if mig else "gpu-a/0",
        index=2 if mig else 0,
        uuid="GPU-aaaa-2" if mig else "GPU-aaaa-0",
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


BOOKINGS: dict[str, GpuAssignment | None] = {
    "cpu": None,
    "gpu": gpus(),
    "mig": gpus(mig=True),
}


# ---- user servers (KubeSpawner) ----------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No cluster here: skip loading a kube config and creating an API client."""
    import kubespawner.spawner

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **kwargs: None)
    monkeypatch.setattr(kubespawner.spawner, "shared_client", lambda name: None)
    yield


def spawner(**traits: Any) -> WerkhubKubeSpawner:
    """The spawner as the Helm values configure it (``singleuser`` of hub/helm/values.yaml:
    image, limits, uid and fsGid, home volume, extra labels and environment)."""
    c = Config()
    c.KubeSpawner.image = "registry.example.org/werkhub/pytorch:0.1.0"
    c.KubeSpawner.image_pull_policy = "IfNotPresent"
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.KubeSpawner.default_url = "/lab"
    c.KubeSpawner.mem_limit = "32G"
    c.KubeSpawner.mem_guarantee = "4G"
    c.KubeSpawner.cpu_limit = 8.0
    c.KubeSpawner.cpu_guarantee = 1.0
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.environment = {
        "WERKHUB_SERVICE_URL": "http://proxy-public/services/werkhub/",
        "MLFLOW_TRACKING_URI": "http://proxy-public/services/mlflow/",
    }
    c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-proxy-http": "true"}
    c.KubeSpawner.node_selector = {"werk.example/pool": "users"}
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.storage_capacity = "20Gi"
    c.KubeSpawner.pvc_name_template = "claim-{username}{servername}"
    c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
    c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
    c.WerkhubKubeSpawner.gpu_product_names = {"H100": "NVIDIA-H100-80GB-HBM3"}
    for name, value in traits.items():
        setattr(c.WerkhubKubeSpawner, name, value)
    return WerkhubKubeSpawner(config=c, _mock=True)


async def user_objects(booking: GpuAssignment | None, **traits: Any) -> list[Obj]:
    """The pod and home PVC KubeSpawner would create, as the Kubernetes client sends them
    (``sanitize_for_serialization``: attribute names as the API spells them, no nulls).
    KubeSpawner posts them to the pods and PVCs endpoints, which imply kind and version."""
    s = spawner(**traits)
    s.apply_gpu_assignment(booking)
    pod, pvc = await s.get_pod_manifest(), s.get_pvc_manifest()
    async with ApiClient() as api:
        made = [api.sanitize_for_serialization(pod), api.sanitize_for_serialization(pvc)]
    for obj, kind in zip(made, ("Pod", "PersistentVolumeClaim"), strict=True):
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", kind)
    return made


@pytest.mark.parametrize("booking", list(BOOKINGS))
async def test_user_server_pod_and_home(offline: None, booking: str) -> None:
    made = await user_objects(BOOKINGS[booking])
    pod = made[0]
    # the objects under test are the ones the booking shaped
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/mig-3g.40gb") == ("1" if booking == "mig" else None)
    assert limits["nvidia.com/gpu"] == ("1" if booking == "gpu" else "0")
    assert (
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == made[1]["metadata"]["name"]
    )
    for version in KUBE_VERSIONS:
        assert_valid(made, version)


async def test_user_server_pod_mig_single_strategy(offline: None) -> None:
    made = await user_objects(BOOKINGS["mig"], gpu_mig_resource="nvidia.com/gpu")
    for version in KUBE_VERSIONS:
        assert_valid(made, version)


# ---- job runs ----------------------------------------------------------------------------

HOME = "/srv/werkhub/homes/alice"
RUN: dict[str, Any] = {
    "run_id": 42,
    "job_id": 7,
    "job_name": "Morning report",
    "owner": "alice",
    "notebook": f"{HOME}/reports/daily.ipynb",
    "cwd": f"{HOME}/reports",
    "out_dir": "/srv/werkhub/jobs/runs/42",
    "parameters": {"n": 3},
    "deadline_s": 900,
}


def job_objects(booking: GpuAssignment | None, **kwargs: Any) -> list[Obj]:
    return [
        kube_job_manifest(
            RUN,
            "registry.example.org/werkhub/pytorch:0.1.0",
            home=HOME,
            assignment=booking,
            product_names={"H100": "NVIDIA-H100-80GB-HBM3"},
            **kwargs,
        )
    ]


@pytest.mark.parametrize("booking", list(BOOKINGS))
@pytest.mark.parametrize(
    "limits",
    [
        {},
        # an image's Docker-style limits, converted as the scheduler converts them
        {"mem_limit": "8G", "cpu_limit": 2.0},
        {"mem_limit": "768m", "cpu_limit": 1.5},
    ],
    ids=["no-limits", "8G-2cpu", "768m-1.5cpu"],
)
def test_job_run(booking: str, limits: dict[str, Any]) -> None:
    made = job_objects(
        BOOKINGS[booking],
        mem_limit=kube_memory(limits.get("mem_limit")),
        cpu_limit=whole(limits.get("cpu_limit")),
    )
    for version in KUBE_VERSIONS:
        assert_valid(made, version)


def test_job_run_with_a_claim_and_mig_single_strategy() -> None:
    made = job_objects(
        BOOKINGS["mig"],
        claim_name="home-alice",
        resource_names=KubeResourceNames(mig="nvidia.com/gpu"),
        namespace="jobs",
    )
    for version in KUBE_VERSIONS:
        assert_valid(made, version)


# ---- model endpoints ---------------------------------------------------------------------

ENDPOINT = ReplicaSpec(
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
ENDPOINTS: dict[str, ReplicaSpec] = {
    "cpu": ENDPOINT,
    "cpu-unlimited": replace(ENDPOINT, cpu=None, memory=None),
    "gpu": replace(ENDPOINT, gpu_type="H100", gpu_indexes=(2, 5)),
    "mig": replace(ENDPOINT, gpu_type="A100-80GB:3g.40gb", gpu_indexes=(1,)),
    "long-names": replace(ENDPOINT, owner="o" * 40, name="Ä very long name" * 4, version="12"),
}
MODELS: dict[str, Callable[[ReplicaSpec], Any]] = {
    "registry": lambda spec: registry_model(
        spec, "http://proxy-public/services/mlflow/", "werkhub-endpoint-7"
    ),
    "registry-no-token": lambda spec: registry_model(
        spec, "http://proxy-public/services/mlflow/", None
    ),
    "claim": lambda spec: ClaimModel("werkhub-models", f"{spec.endpoint_id}/{spec.version}"),
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_endpoint(endpoint: str, model: str) -> None:
    spec = ENDPOINTS[endpoint]
    made = kubernetes_manifests(
        spec, "registry.example.org/werkhub/pytorch:0.1.0", MODELS[model](spec)
    )
    assert [o["kind"] for o in made] == ["Deployment", "Service", "NetworkPolicy"]
    for version in KUBE_VERSIONS:
        assert_valid(made, version)


def test_endpoint_pinned_to_a_node_without_network_policy() -> None:
    spec = ENDPOINTS["mig"]
    made = kubernetes_manifests(
        spec,
        "registry.example.org/werkhub/pytorch:0.1.0",
        MODELS["registry"](spec),
        namespace="ml",
        gpu_resource="nvidia.com/gpu",
        node="gpu-a",
        product_names={"A100-80GB": "NVIDIA-A100-SXM4-80GB"},
        gateway_labels={"component": "hub", "release": "werkhub"},
        proxy_labels={"component": "proxy", "release": "werkhub"},
        tmp_size="1Gi",
        network_policy=False,
    )
    assert [o["kind"] for o in made] == ["Deployment", "Service"]
    for version in KUBE_VERSIONS:
        assert_valid(made, version)


# ---- the checks themselves ---------------------------------------------------------------


def test_every_version_is_shipped() -> None:
    """The package (pinned in the dev extra) has each schema, strict form included."""
    for version in KUBE_VERSIONS:
        assert _validator(version, "apps/v1", "Deployment") is not None


def test_the_oldest_version_is_the_charts_floor() -> None:
    chart = Path(__file__).resolve().parents[3] / "shared" / "data" / "z2jh" / "Chart.yaml"
    if not chart.is_file():
        pytest.skip(f"the chart is not at {chart.parent} (test_helm_values.py says more)")
    kube_version = yaml.safe_load(chart.read_text())["kubeVersion"]
    assert kube_version == f">={KUBE_VERSIONS[0]}.0-0"


def test_the_schema_catches_mistakes() -> None:
    """The check is live: unknown fields, wrong types, a missing required field, a field
    in the wrong place (a container-only security setting on the pod) are errors."""
    spec = ENDPOINTS["gpu"]
    good = kubernetes_manifests(spec, "img", MODELS["registry"](spec))[0]
    version = KUBE_VERSIONS[-1]
    assert schema_errors(good, version) == []

    def broken(change: Callable[[Obj], None]) -> list[str]:
        obj = copy.deepcopy(good)
        change(obj)
        return schema_errors(obj, version)

    pod = ("spec", "template", "spec")

    def at(obj: Obj, path: tuple[str, ...] = pod) -> Obj:
        for key in path:
            obj = obj[key]
        return obj

    assert any(
        "'replica' was unexpected" in e for e in broken(lambda o: o["spec"].update(replica=2))
    )
    assert any(
        "allowPrivilegeEscalation" in e
        for e in broken(lambda o: at(o)["securityContext"].update(allowPrivilegeEscalation=False))
    )
    assert any(
        "is not of type" in e or "is not valid" in e
        for e in broken(lambda o: at(o)["containers"][0].update(ports=8080))
    )
    assert any(
        "'name' is a required property" in e
        for e in broken(lambda o: at(o)["containers"][0].pop("name"))
    )
    assert any(
        "'spec' was unexpected" in e for e in broken(lambda o: o["metadata"].update(spec={}))
    )


def test_the_server_rules_catch_mistakes() -> None:
    spec = ENDPOINTS["cpu"]
    good = kubernetes_manifests(spec, "img", MODELS["registry"](spec))
    assert [e for o in good for e in server_rules(o)] == []
    bad = copy.deepcopy(good[0])
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["memory"] = "1.5g"
    container["ports"][0]["name"] = "http-scoring-server"
    container["volumeMounts"].append({"name": "cache", "mountPath": "/cache"})
    bad["metadata"]["labels"]["werkhub.owner"] = "anna b"
    bad["metadata"]["name"] = "Churn"
    bad["spec"]["template"]["spec"]["nodeName"] = None
    errors = "\n".join(server_rules(bad))
    for part in ("'1.5g'", "http-scoring-server", "'cache'", "'anna b'", "'Churn'", "null"):
        assert part in errors, part
