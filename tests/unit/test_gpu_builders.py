"""Pure GPU builders: a booking plus the inventory -> Docker DeviceRequests, environment,
Kubernetes resources, node selector and tolerations, asserted as plain dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from werkhub.config.schema import GpuDevice, GpuNode, GpusSection, MigSlices
from werkhub.gpus.devices import (
    AssignedDevice,
    GpuAssignment,
    GpuAssignmentError,
    KubeResourceNames,
    SpansNodesError,
    UnknownDeviceError,
    assignment_from_devices,
    build_assignment,
    docker_device_requests,
    gpu_environment,
    kube_node_selector,
    kube_resources,
    kube_tolerations,
    parse_unit_id,
)
from werkhub.gpus.inventory import describe
from werkhub.service.spawn import device_details

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
                        uuid="GPU-aaaa-2",
                        model="A100-80GB",
                        memory_gb=80,
                        mig=[MigSlices(profile="3g.40gb", count=2)],
                    ),
                ],
            ),
            GpuNode(
                name="gpu-b",
                devices=[GpuDevice(index=0, model="H100", memory_gb=80)],  # no UUID known
            ),
        ]
    )
)
PRODUCTS = {"H100": "NVIDIA-H100-80GB-HBM3", "A100-80GB": "NVIDIA-A100-SXM4-80GB"}


def booking(devices: list[str], gpu_type: str = "H100", **extra: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "user": "lena",
        "gpu_type": gpu_type,
        "count": len(devices),
        "devices": devices,
        "state": "active",
        "simulated": False,
        **extra,
    }


# -- assignment -------------------------------------------------------------------------


def test_whole_gpus_assignment() -> None:
    a = build_assignment(booking(["gpu-a/0", "gpu-a/1"]), INVENTORY)
    assert a.model_dump() == {
        "booking_id": 7,
        "gpu_type": "H100",
        "model": "H100",
        "node": "gpu-a",
        "devices": (
            {
                "unit": "gpu-a/0",
                "index": 0,
                "uuid": "GPU-aaaa-0",
                "memory_gb": 80.0,
                "mig_profile": None,
                "mig_slice": None,
                "mig_uuid": None,
            },
            {
                "unit": "gpu-a/1",
                "index": 1,
                "uuid": "GPU-aaaa-1",
                "memory_gb": 80.0,
                "mig_profile": None,
                "mig_slice": None,
                "mig_uuid": None,
            },
        ),
        "simulated": False,
    }
    assert a.count == 2 and a.mig_profile is None


def test_mig_assignment() -> None:
    a = build_assignment(booking(["gpu-a/2/3g.40gb-1"], "A100-80GB:3g.40gb"), INVENTORY)
    assert a.model == "A100-80GB" and a.mig_profile == "3g.40gb"
    assert a.devices == (
        AssignedDevice(
            unit="gpu-a/2/3g.40gb-1",
            index=2,
            uuid="GPU-aaaa-2",
            memory_gb=40,
            mig_profile="3g.40gb",
            mig_slice=1,
        ),
    )


def test_prepare_reply_gives_the_same_assignment() -> None:
    """The spawner builds from /api/spawn/prepare's device details; same result."""
    for units, gpu_type in (
        (["gpu-a/0", "gpu-a/1"], "H100"),
        (["gpu-a/2/3g.40gb-0", "gpu-a/2/3g.40gb-1"], "A100-80GB:3g.40gb"),
    ):
        b = booking(units, gpu_type)
        assert assignment_from_devices(b, device_details(INVENTORY, units)) == (
            build_assignment(b, INVENTORY)
        )


def test_unknown_device() -> None:
    with pytest.raises(UnknownDeviceError, match=r"gpu-a/9 not in the GPU inventory"):
        build_assignment(booking(["gpu-a/0", "gpu-a/9"]), INVENTORY)
    with pytest.raises(UnknownDeviceError, match="not a GPU unit id"):
        parse_unit_id("gpu-a")
    with pytest.raises(UnknownDeviceError, match="no details for device"):
        assignment_from_devices(booking(["gpu-a/9"]), [])
    # a ValueError, so callers may catch either
    assert issubclass(UnknownDeviceError, GpuAssignmentError)
    assert issubclass(GpuAssignmentError, ValueError)


def test_unknown_mig_profile() -> None:
    inventory = copy.deepcopy(INVENTORY)
    inventory["units"].append(
        {"id": "gpu-a/1/1g.10gb-0", "node": "gpu-a", "gpu_type": "H100:1g.10gb", "index": 100}
    )
    with pytest.raises(UnknownDeviceError, match="gives GPU 1 no MIG slices"):
        build_assignment(booking(["gpu-a/1/1g.10gb-0"], "H100:1g.10gb"), inventory)


def test_devices_on_two_nodes() -> None:
    with pytest.raises(SpansNodesError) as err:
        build_assignment(booking(["gpu-a/0", "gpu-b/0"]), INVENTORY)
    assert str(err.value) == (
        "booking 7 has devices on 2 nodes (gpu-a: gpu-a/0; gpu-b: gpu-b/0); "
        "one server runs on one node"
    )
    details = device_details(INVENTORY, ["gpu-a/0", "gpu-b/0"])
    with pytest.raises(SpansNodesError):
        assignment_from_devices(booking(["gpu-a/0", "gpu-b/0"]), details)


@pytest.mark.parametrize(
    ("b", "message"),
    [
        (booking([]), "booking 7 has no devices assigned"),
        (booking(["gpu-a/0"], count=2), "is for 2 unit"),
        (booking(["gpu-a/0", "gpu-a/0"]), "lists a device twice"),
        (booking(["gpu-a/0"], "L40S"), "is for L40S but its devices are H100"),
        (booking(["gpu-a/0", "gpu-a/2/3g.40gb-0"]), "mixes GPU types"),
        ({"devices": ["gpu-a/0"]}, "has no id"),
    ],
)
def test_inconsistent_bookings(b: dict[str, Any], message: str) -> None:
    with pytest.raises(GpuAssignmentError, match=message):
        build_assignment(b, INVENTORY)


# -- Docker and local -------------------------------------------------------------------


def test_docker_whole_gpus_by_uuid_else_index() -> None:
    a = build_assignment(booking(["gpu-a/0", "gpu-a/1"]), INVENTORY)
    assert docker_device_requests(a) == [
        {"Driver": "nvidia", "DeviceIDs": ["GPU-aaaa-0", "GPU-aaaa-1"], "Capabilities": [["gpu"]]}
    ]
    b = build_assignment(booking(["gpu-b/0"]), INVENTORY)
    assert docker_device_requests(b) == [
        {"Driver": "nvidia", "DeviceIDs": ["0"], "Capabilities": [["gpu"]]}
    ]
    assert gpu_environment(a) == {
        "NVIDIA_VISIBLE_DEVICES": "GPU-aaaa-0,GPU-aaaa-1",
        "WERKHUB_BOOKING_ID": "7",
        "WERKHUB_GPU_TYPE": "H100",
        "WERKHUB_GPU_COUNT": "2",
        "WERKHUB_GPU_UNITS": "gpu-a/0,gpu-a/1",
        "WERKHUB_GPU_NODE": "gpu-a",
    }


def test_docker_mig_slices() -> None:
    a = build_assignment(
        booking(["gpu-a/2/3g.40gb-0", "gpu-a/2/3g.40gb-1"], "A100-80GB:3g.40gb"), INVENTORY
    )
    assert docker_device_requests(a) == [
        {"Driver": "nvidia", "DeviceIDs": ["2:0", "2:1"], "Capabilities": [["gpu"]]}
    ]
    assert gpu_environment(a)["NVIDIA_VISIBLE_DEVICES"] == "2:0,2:1"


def test_mig_uuids_where_the_inventory_has_them() -> None:
    inventory = copy.deepcopy(INVENTORY)
    gpu = inventory["nodes"][0]["devices"][2]
    gpu["mig"][0]["uuids"] = ["MIG-1111", "MIG-2222"]
    a = build_assignment(booking(["gpu-a/2/3g.40gb-1"], "A100-80GB:3g.40gb"), inventory)
    assert docker_device_requests(a)[0]["DeviceIDs"] == ["MIG-2222"]
    assert gpu_environment(a, "local")["CUDA_VISIBLE_DEVICES"] == "MIG-2222"


def test_local_process_environment() -> None:
    a = build_assignment(booking(["gpu-a/1", "gpu-a/0"]), INVENTORY)
    env = gpu_environment(a, "local")
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    mig = build_assignment(booking(["gpu-a/2/3g.40gb-0"], "A100-80GB:3g.40gb"), INVENTORY)
    with pytest.raises(GpuAssignmentError, match="only by its MIG UUID"):
        gpu_environment(mig, "local")


@pytest.mark.parametrize("backend", ["docker", "kubernetes", "local"])
def test_cpu_only_sees_no_gpu(backend: str) -> None:
    assert docker_device_requests(None) == []
    assert gpu_environment(None, backend) == {  # type: ignore[arg-type]
        "NVIDIA_VISIBLE_DEVICES": "void",
        "CUDA_VISIBLE_DEVICES": "",
        "WERKHUB_GPU_COUNT": "0",
    }


def test_never_all_gpus() -> None:
    for units, gpu_type in ((["gpu-a/0"], "H100"), (["gpu-a/2/3g.40gb-0"], "A100-80GB:3g.40gb")):
        for request in docker_device_requests(
            build_assignment(booking(units, gpu_type), INVENTORY)
        ):
            assert "Count" not in request
            assert request["DeviceIDs"] and "all" not in request["DeviceIDs"]


def test_simulated_booking_gets_no_real_device() -> None:
    demo = describe(GpusSection())
    a = build_assignment(booking(["demo/0"], simulated=True), demo)
    assert a.simulated
    assert docker_device_requests(a) == []
    env = gpu_environment(a)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["WERKHUB_GPU_SIMULATED"] == "1"
    assert kube_resources(a)["limits"] == {"nvidia.com/gpu": "0"}
    assert kube_node_selector(a) == {} and kube_tolerations(a) == []


# -- Kubernetes -------------------------------------------------------------------------


def test_kube_whole_gpus() -> None:
    a = build_assignment(booking(["gpu-a/0", "gpu-a/1"]), INVENTORY)
    assert kube_resources(a) == {
        "limits": {"nvidia.com/gpu": "2"},
        "requests": {"nvidia.com/gpu": "2"},
    }
    assert kube_node_selector(a, product_names=PRODUCTS) == {
        "kubernetes.io/hostname": "gpu-a",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    # without a known product value the pod is pinned by node only
    assert kube_node_selector(a) == {"kubernetes.io/hostname": "gpu-a"}
    assert kube_node_selector(
        a, node_label="werkhub.io/node", product_label="gpu", product_names=PRODUCTS
    ) == {"werkhub.io/node": "gpu-a", "gpu": "NVIDIA-H100-80GB-HBM3"}
    assert kube_tolerations(a) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert kube_tolerations(a, taint_key="gpu")[0]["key"] == "gpu"
    assert gpu_environment(a, "kubernetes") == {
        "WERKHUB_BOOKING_ID": "7",
        "WERKHUB_GPU_TYPE": "H100",
        "WERKHUB_GPU_COUNT": "2",
        "WERKHUB_GPU_UNITS": "gpu-a/0,gpu-a/1",
        "WERKHUB_GPU_NODE": "gpu-a",
    }


def test_kube_mig_slices() -> None:
    a = build_assignment(
        booking(["gpu-a/2/3g.40gb-0", "gpu-a/2/3g.40gb-1"], "A100-80GB:3g.40gb"), INVENTORY
    )
    assert kube_resources(a) == {
        "limits": {"nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": "2"},
        "requests": {"nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": "2"},
    }
    # the device plugin's "single" MIG strategy offers slices as nvidia.com/gpu
    single = KubeResourceNames(mig="nvidia.com/gpu")
    assert kube_resources(a, single)["limits"] == {"nvidia.com/gpu": "2"}
    products = {"A100-80GB:3g.40gb": "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb", **PRODUCTS}
    assert kube_node_selector(a, product_names=products) == {
        "kubernetes.io/hostname": "gpu-a",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb",
    }
    assert kube_node_selector(a, product_names=PRODUCTS)["nvidia.com/gpu.product"] == (
        "NVIDIA-A100-SXM4-80GB"
    )


def test_kube_cpu_only() -> None:
    assert kube_resources(None) == {
        "limits": {"nvidia.com/gpu": "0"},
        "requests": {"nvidia.com/gpu": "0"},
    }
    assert kube_node_selector(None, product_names=PRODUCTS) == {}
    assert kube_tolerations(None) == []


def test_assignment_is_immutable() -> None:
    a = build_assignment(booking(["gpu-a/0"]), INVENTORY)
    with pytest.raises(ValueError):
        a.node = "gpu-b"  # type: ignore[misc]
    assert isinstance(a, GpuAssignment)
