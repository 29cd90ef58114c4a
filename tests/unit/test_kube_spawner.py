"""The pod WerkhubKubeSpawner builds for each kind of booking, as a plain dict, without a
cluster: only kubespawner's Kubernetes config loading and API client are stubbed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from werkhub.config.schema import GpuDevice, GpuNode, GpusSection, MigSlices
from werkhub.gpus.devices import GpuAssignment, build_assignment
from werkhub.gpus.inventory import describe
from werkhub.spawners.kube import WerkhubKubeSpawner, gpu_pod_settings

INVENTORY = describe(
    GpusSection(
        nodes=[
            GpuNode(
                name="gpu-a",
                devices=[
                    GpuDevice(index=0, uuid="GPU-aaaa-0", model="H100", memory_gb=80),
                    GpuDevice(index=1, uuid="GPU-aaaa-1", model="H100", memory_gb=80),
                    GpuDevice(
                        index=2,
                        model="A100-80GB",
                        memory_gb=80,
                        mig=[MigSlices(profile="3g.40gb", count=2)],
                    ),
                ],
            )
        ]
    )
)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SITE_TOLERATION = {"key": "site", "operator": "Equal", "value": "werk1", "effect": "NoSchedule"}


def assignment(devices: list[str], gpu_type: str) -> GpuAssignment:
    booking = {"id": 3, "gpu_type": gpu_type, "count": len(devices), "devices": devices}
    return build_assignment(booking, INVENTORY)


WHOLE = assignment(["gpu-a/0", "gpu-a/1"], "H100")
MIG = assignment(["gpu-a/2/3g.40gb-1"], "A100-80GB:3g.40gb")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No cluster here: skip loading a kube config and creating an API client."""
    import kubespawner.spawner

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **kwargs: None)
    monkeypatch.setattr(kubespawner.spawner, "shared_client", lambda name: None)
    yield


def spawner(**traits: Any) -> WerkhubKubeSpawner:
    c = Config()
    c.KubeSpawner.image = "registry.werk.example/werkhub/pytorch:1"
    c.KubeSpawner.mem_limit = "16G"
    c.KubeSpawner.mem_guarantee = "4G"
    c.KubeSpawner.cpu_limit = 8.0
    c.KubeSpawner.cpu_guarantee = 1.0
    c.KubeSpawner.environment = {"WERKHUB_SERVICE_URL": "http://proxy-public/services/werkhub/"}
    c.KubeSpawner.tolerations = [SITE_TOLERATION]
    c.KubeSpawner.node_selector = {"werk.example/pool": "users"}
    c.WerkhubKubeSpawner.gpu_product_names = {"H100": "NVIDIA-H100-80GB-HBM3"}
    for name, value in traits.items():
        setattr(c.WerkhubKubeSpawner, name, value)
    return WerkhubKubeSpawner(config=c, _mock=True)


async def pod_of(s: WerkhubKubeSpawner) -> dict[str, Any]:
    pod = await s.get_pod_manifest()
    async with ApiClient() as api:
        return api.sanitize_for_serialization(pod)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (notebook,) = pod["spec"]["containers"]
    return notebook


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(pod)["env"]}


def assert_hardened(pod: dict[str, Any]) -> None:
    assert container(pod)["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 100,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["spec"]["securityContext"] == {"fsGroup": 100}
    assert pod["spec"]["automountServiceAccountToken"] is False


async def test_whole_gpus_pod(offline: None) -> None:
    s = spawner()
    s.apply_gpu_assignment(WHOLE)
    pod = await pod_of(s)
    assert container(pod)["resources"] == {
        "limits": {"cpu": 8.0, "memory": 16 * 2**30, "nvidia.com/gpu": "2"},
        "requests": {"cpu": 1.0, "memory": 4 * 2**30, "nvidia.com/gpu": "2"},
    }
    assert pod["spec"]["nodeSelector"] == {
        "werk.example/pool": "users",
        "kubernetes.io/hostname": "gpu-a",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert pod["spec"]["tolerations"] == [SITE_TOLERATION, GPU_TOLERATION]
    e = env(pod)
    assert e["WERKHUB_GPU_UNITS"] == "gpu-a/0,gpu-a/1"
    assert e["WERKHUB_SERVICE_URL"] == "http://proxy-public/services/werkhub/"
    # the device plugin sets the visible devices; werkhub must not override them
    assert "NVIDIA_VISIBLE_DEVICES" not in e and "CUDA_VISIBLE_DEVICES" not in e
    assert container(pod)["image"] == "registry.werk.example/werkhub/pytorch:1"
    assert_hardened(pod)


async def test_mig_pod(offline: None) -> None:
    s = spawner()
    s.apply_gpu_assignment(MIG)
    pod = await pod_of(s)
    resources = container(pod)["resources"]
    assert resources["limits"] == {
        "cpu": 8.0,
        "memory": 16 * 2**30,
        "nvidia.com/gpu": "0",
        "nvidia.com/mig-3g.40gb": "1",
    }
    assert resources["requests"]["nvidia.com/mig-3g.40gb"] == "1"
    # no product value configured for this type: pinned by node only
    assert pod["spec"]["nodeSelector"] == {
        "werk.example/pool": "users",
        "kubernetes.io/hostname": "gpu-a",
    }
    assert pod["spec"]["tolerations"] == [SITE_TOLERATION, GPU_TOLERATION]
    assert_hardened(pod)


async def test_mig_single_strategy(offline: None) -> None:
    s = spawner(gpu_mig_resource="nvidia.com/gpu")
    s.apply_gpu_assignment(MIG)
    limits = container(await pod_of(s))["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and "nvidia.com/mig-3g.40gb" not in limits


async def test_cpu_only_pod(offline: None) -> None:
    s = spawner()
    s.apply_gpu_assignment(None)
    pod = await pod_of(s)
    assert container(pod)["resources"] == {
        "limits": {"cpu": 8.0, "memory": 16 * 2**30, "nvidia.com/gpu": "0"},
        "requests": {"cpu": 1.0, "memory": 4 * 2**30, "nvidia.com/gpu": "0"},
    }
    assert pod["spec"]["nodeSelector"] == {"werk.example/pool": "users"}
    assert pod["spec"]["tolerations"] == [SITE_TOLERATION]
    e = env(pod)
    assert e["NVIDIA_VISIBLE_DEVICES"] == "void" and e["CUDA_VISIBLE_DEVICES"] == ""
    assert_hardened(pod)


async def test_no_assignment_means_no_gpus(offline: None) -> None:
    """A spawn nobody decided the GPUs of gets none (default deny)."""
    pod = await pod_of(spawner())
    assert container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "0"
    assert env(pod)["NVIDIA_VISIBLE_DEVICES"] == "void"


async def test_reassigning_does_not_accumulate(offline: None) -> None:
    s = spawner()
    s.apply_gpu_assignment(WHOLE)
    s.apply_gpu_assignment(MIG)
    s.apply_gpu_assignment(MIG)
    pod = await pod_of(s)
    assert container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "0"
    assert pod["spec"]["tolerations"] == [SITE_TOLERATION, GPU_TOLERATION]
    s.clear_state()
    assert s.gpu_assignment is None
    pod = await pod_of(s)  # the next spawn decides again; undecided means CPU only
    assert container(pod)["resources"]["limits"] == {
        "cpu": 8.0,
        "memory": 16 * 2**30,
        "nvidia.com/gpu": "0",
    }
    assert pod["spec"]["tolerations"] == [SITE_TOLERATION]


def test_configured_gpu_resources_cannot_widen_a_booking() -> None:
    base = {
        "extra_resource_limits": {"nvidia.com/gpu": "8", "nvidia.com/mig-1g.10gb": "1", "x": "1"},
        "extra_resource_guarantees": {},
        "node_selector": {},
        "tolerations": {"b": SITE_TOLERATION, "a": GPU_TOLERATION},
        "environment": {"NVIDIA_VISIBLE_DEVICES": "all"},
    }
    cpu = gpu_pod_settings(base, None)
    assert cpu["extra_resource_limits"] == {"x": "1", "nvidia.com/gpu": "0"}
    assert cpu["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert cpu["tolerations"] == [SITE_TOLERATION]
    whole = gpu_pod_settings(base, WHOLE)
    assert whole["extra_resource_limits"] == {"x": "1", "nvidia.com/gpu": "2"}
    assert whole["tolerations"] == [SITE_TOLERATION, GPU_TOLERATION]
    assert "NVIDIA_VISIBLE_DEVICES" not in whole["environment"]
