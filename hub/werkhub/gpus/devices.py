"""Pure builders: from a GPU booking to exactly those devices in a Docker container, a
local process or a Kubernetes pod.

Standard library and pydantic only (a firm layout rule): no Docker, Kubernetes or
JupyterHub import, so every builder is tested as plain dicts without a daemon or cluster.

Device naming, as the NVIDIA Container Toolkit and CUDA understand it:

* a whole GPU is named by its UUID (``GPU-5f2c...``) when the inventory knows it, else by
  its index; indexes are NVML's (``nvidia-smi``) order, which is PCI bus order;
* a MIG slice is named ``MIG-<uuid>`` when its MIG UUID is known, else
  ``<GPU index>:<MIG index>``. The MIG index is the ``N`` of the werkhub unit id
  ``NODE/INDEX/PROFILE-N``: werkhub numbers a GPU's slices in the order werkhub.yaml lists
  them, which is the driver's MIG device order (``nvidia-smi -L``) when a GPU carries one
  profile, the usual case; list mixed profiles in the driver's order.

A simulated booking (the demo inventory, or ``gpus.simulated``) has no real devices: every
builder treats it as CPU-only, and the environment says ``WERKHUB_GPU_SIMULATED=1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from werkhub.errors import Invalid

Backend = Literal["docker", "kubernetes", "local"]

#: a CPU-only server must see no GPU, whatever the image's own environment says:
#: "void" makes the NVIDIA runtime add no device (CUDA images default to "all")
CPU_ONLY_ENV = {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}

_PROFILE = re.compile(r"^(\d+g\.(\d+)gb(?:\+me)?)-(\d+)$")


class GpuAssignmentError(Invalid, ValueError):
    """A booking's devices cannot be given to one server; the message says why."""


class UnknownDeviceError(GpuAssignmentError):
    """A booked device is not in the GPU inventory (or its unit id is malformed)."""


class SpansNodesError(GpuAssignmentError):
    """A booking's devices are on more than one node; a server runs on one node."""


class AssignedDevice(BaseModel):
    """One booked unit: a whole GPU, or one MIG slice of a GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: str = Field(description='werkhub unit id, "NODE/INDEX" or "NODE/INDEX/PROFILE-N"')
    index: int = Field(ge=0, description="index of the (parent) GPU on its node, NVML order")
    uuid: str | None = Field(default=None, description="UUID of the (parent) GPU")
    memory_gb: float | None = None
    mig_profile: str | None = Field(default=None, description='e.g. "3g.40gb"')
    mig_slice: int | None = Field(default=None, ge=0, description="MIG device index")
    mig_uuid: str | None = Field(default=None, description='"MIG-..." where known')

    @property
    def is_mig(self) -> bool:
        return self.mig_profile is not None


class GpuAssignment(BaseModel):
    """The devices one server gets: those of one booking, all on one node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    booking_id: int
    gpu_type: str = Field(description='bookable type, e.g. "H100" or "A100-80GB:3g.40gb"')
    model: str = Field(description='GPU model without the MIG profile, e.g. "A100-80GB"')
    node: str
    devices: tuple[AssignedDevice, ...] = Field(min_length=1)
    simulated: bool = False

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def mig_profile(self) -> str | None:
        return self.devices[0].mig_profile


def parse_unit_id(unit_id: str) -> tuple[str, int, str | None, int | None]:
    """``"n1/3"`` -> ("n1", 3, None, None); ``"n1/3/3g.40gb-1"`` -> ("n1", 3, "3g.40gb", 1)."""
    parts = unit_id.split("/")
    if len(parts) in (2, 3) and parts[0] and parts[1].isdigit():
        if len(parts) == 2:
            return parts[0], int(parts[1]), None, None
        match = _PROFILE.match(parts[2])
        if match:
            return parts[0], int(parts[1]), match.group(1), int(match.group(3))
    raise UnknownDeviceError(
        f"'{unit_id}' is not a GPU unit id (NODE/INDEX or NODE/INDEX/PROFILE-N)"
    )


def build_assignment(booking: Mapping[str, Any], inventory: Mapping[str, Any]) -> GpuAssignment:
    """The devices of ``booking`` (the service's booking JSON) looked up in ``inventory``
    (what ``werkhub.gpus.inventory.describe()`` returns: its ``units`` and ``nodes``)."""
    booking_id, unit_ids = _booked_units(booking)
    units = {u["id"]: u for u in inventory.get("units", [])}
    gpus = {
        (node["name"], dev["index"]): dev
        for node in inventory.get("nodes", [])
        for dev in node.get("devices", [])
    }
    missing = [u for u in unit_ids if u not in units]
    if missing:
        raise UnknownDeviceError(
            f"booking {booking_id}: device(s) {', '.join(missing)} not in the GPU inventory; "
            "was werkhub.yaml's gpus section changed after the booking was made?"
        )
    _one_node(booking_id, {u: units[u]["node"] for u in unit_ids})
    devices = []
    for unit_id in unit_ids:
        node, index, profile, n = parse_unit_id(unit_id)
        gpu = gpus.get((units[unit_id]["node"], index))
        if gpu is None or node != units[unit_id]["node"]:
            raise UnknownDeviceError(
                f"booking {booking_id}: no GPU {index} on node {node} in the inventory"
            )
        mig_uuid = None
        if profile is not None:
            mig_uuid = _mig_uuid(gpu, profile, n, booking_id, unit_id)
        devices.append(
            _device(unit_id, index, gpu.get("uuid"), gpu.get("memory_gb"), profile, n, mig_uuid)
        )
    node = units[unit_ids[0]]["node"]
    models = {gpus[(node, d.index)]["model"] for d in devices}
    simulated = bool(booking.get("simulated")) or any(units[u].get("simulated") for u in unit_ids)
    return _assignment(booking, booking_id, models, node, devices, simulated)


def assignment_from_devices(
    booking: Mapping[str, Any], devices: Sequence[Mapping[str, Any]]
) -> GpuAssignment:
    """The same from the device details the service's ``/api/spawn/prepare`` answers with
    (``unit``, ``node``, ``index``, ``uuid``, ``model``, ``memory_gb``, ``mig``, ``simulated``)."""
    booking_id, unit_ids = _booked_units(booking)
    details = {d["unit"]: d for d in devices}
    missing = [u for u in unit_ids if u not in details]
    if missing:
        raise UnknownDeviceError(
            f"booking {booking_id}: the service sent no details for device(s) {', '.join(missing)}"
        )
    _one_node(booking_id, {u: details[u]["node"] for u in unit_ids})
    built = []
    for unit_id in unit_ids:
        d = details[unit_id]
        node, index, profile, n = parse_unit_id(unit_id)
        mig = d.get("mig") or {}
        if (node, index, profile, n) != (
            d["node"],
            d["index"],
            mig.get("profile"),
            mig.get("slice"),
        ):
            raise UnknownDeviceError(f"booking {booking_id}: details of {unit_id} do not match it")
        built.append(
            _device(unit_id, index, d.get("uuid"), d.get("memory_gb"), profile, n, mig.get("uuid"))
        )
    models = {details[u]["model"] for u in unit_ids}
    simulated = bool(booking.get("simulated")) or any(details[u].get("simulated") for u in unit_ids)
    node = details[unit_ids[0]]["node"]
    return _assignment(booking, booking_id, models, node, built, simulated)


def _booked_units(booking: Mapping[str, Any]) -> tuple[int, list[str]]:
    booking_id = booking.get("id")
    if not isinstance(booking_id, int):
        raise GpuAssignmentError("the booking has no id")
    unit_ids = list(booking.get("devices") or [])
    if not unit_ids:
        raise GpuAssignmentError(f"booking {booking_id} has no devices assigned")
    if len(set(unit_ids)) != len(unit_ids):
        raise GpuAssignmentError(f"booking {booking_id} lists a device twice: {unit_ids}")
    count = booking.get("count")
    if count is not None and count != len(unit_ids):
        raise GpuAssignmentError(
            f"booking {booking_id} is for {count} unit(s) but has {len(unit_ids)} device(s)"
        )
    return booking_id, unit_ids


def _one_node(booking_id: int, node_of: Mapping[str, str]) -> None:
    nodes = sorted(set(node_of.values()))
    if len(nodes) > 1:
        where = "; ".join(f"{n}: {', '.join(u for u in node_of if node_of[u] == n)}" for n in nodes)
        raise SpansNodesError(
            f"booking {booking_id} has devices on {len(nodes)} nodes ({where}); "
            "one server runs on one node"
        )


def _mig_uuid(
    gpu: Mapping[str, Any], profile: str, n: int | None, bid: int, unit: str
) -> str | None:
    profiles = [s.get("profile") for s in gpu.get("mig") or []]
    if profile not in profiles:
        offered = f"the MIG profiles {', '.join(profiles)}" if profiles else "no MIG slices"
        raise UnknownDeviceError(
            f"booking {bid}: {unit} is a {profile} slice but the inventory gives GPU "
            f"{gpu.get('index')} {offered}"
        )
    # werkhub numbers slices across the GPU's profiles in listed order; MIG UUIDs, where the
    # inventory carries them (``uuids`` per profile), follow the same numbering
    uuids = [u for s in gpu.get("mig") or [] for u in s.get("uuids") or [None] * s["count"]]
    return str(uuids[n]) if n is not None and n < len(uuids) and uuids[n] else None


def _device(
    unit: str,
    index: int,
    uuid: Any,
    memory_gb: Any,
    profile: str | None,
    n: int | None,
    mig_uuid: Any,
) -> AssignedDevice:
    if profile is not None:
        # a slice has the memory its profile names ("3g.40gb" -> 40)
        memory_gb = float(profile.split(".")[1].removesuffix("+me").removesuffix("gb"))
    return AssignedDevice(
        unit=unit,
        index=index,
        uuid=uuid or None,
        memory_gb=memory_gb,
        mig_profile=profile,
        mig_slice=n,
        mig_uuid=mig_uuid or None,
    )


def _assignment(
    booking: Mapping[str, Any],
    booking_id: int,
    models: set[str],
    node: str,
    devices: list[AssignedDevice],
    simulated: bool,
) -> GpuAssignment:
    gpu_type = str(booking.get("gpu_type") or "")
    profiles = {d.mig_profile for d in devices}
    if len(models) > 1 or len(profiles) > 1:
        raise GpuAssignmentError(
            f"booking {booking_id} mixes GPU types; its devices must all be {gpu_type}"
        )
    (model,), (profile,) = models, profiles
    expected = model if profile is None else f"{model}:{profile}"
    if gpu_type != expected:
        raise GpuAssignmentError(
            f"booking {booking_id} is for {gpu_type or 'no type'} but its devices are {expected}"
        )
    return GpuAssignment(
        booking_id=booking_id,
        gpu_type=gpu_type,
        model=model,
        node=node,
        devices=tuple(devices),
        simulated=simulated,
    )


def _real(assignment: GpuAssignment | None) -> GpuAssignment | None:
    """The assignment if it names real devices; None (CPU-only) for none or simulated."""
    return None if assignment is None or assignment.simulated else assignment


# -- Docker and local processes ---------------------------------------------------------


def device_id(device: AssignedDevice) -> str:
    """The name the NVIDIA Container Toolkit knows a device by (see the module notes)."""
    if device.is_mig:
        return device.mig_uuid or f"{device.index}:{device.mig_slice}"
    return device.uuid or str(device.index)


def docker_device_requests(assignment: GpuAssignment | None) -> list[dict[str, Any]]:
    """``HostConfig.DeviceRequests`` of the Docker Engine API: the booked devices by id,
    never ``Count: -1`` (all GPUs); an empty list for a CPU-only server."""
    real = _real(assignment)
    if real is None:
        return []
    return [
        {
            "Driver": "nvidia",
            "DeviceIDs": [device_id(d) for d in real.devices],
            "Capabilities": [["gpu"]],
        }
    ]


def gpu_environment(
    assignment: GpuAssignment | None, backend: Backend = "docker"
) -> dict[str, str]:
    """Environment variables for a server: what it may see, and what it was given.

    * CPU-only (or simulated), every backend: ``NVIDIA_VISIBLE_DEVICES=void`` and
      ``CUDA_VISIBLE_DEVICES=""``, so no GPU leaks in through an image default or a node
      whose default container runtime is NVIDIA's.
    * docker: ``NVIDIA_VISIBLE_DEVICES`` lists the same ids as the DeviceRequest; inside
      the container CUDA numbers the devices from 0, so ``CUDA_VISIBLE_DEVICES`` stays unset.
    * kubernetes: the device plugin chooses and exposes the devices; nothing is set.
    * local: ``CUDA_VISIBLE_DEVICES`` is the comma list of GPU indexes with
      ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (so CUDA numbers GPUs as nvidia-smi does), or of
      MIG UUIDs; a MIG slice without a known MIG UUID raises :class:`GpuAssignmentError`.

    ``WERKHUB_*`` variables tell notebooks and widgets what the server was given.
    """
    if assignment is None:
        return {**CPU_ONLY_ENV, "WERKHUB_GPU_COUNT": "0"}
    env = {
        "WERKHUB_BOOKING_ID": str(assignment.booking_id),
        "WERKHUB_GPU_TYPE": assignment.gpu_type,
        "WERKHUB_GPU_COUNT": str(assignment.count),
        "WERKHUB_GPU_UNITS": ",".join(d.unit for d in assignment.devices),
        "WERKHUB_GPU_NODE": assignment.node,
    }
    if assignment.simulated:
        return {**CPU_ONLY_ENV, **env, "WERKHUB_GPU_SIMULATED": "1"}
    if backend == "docker":
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(device_id(d) for d in assignment.devices)
    elif backend == "local":
        env.update(_local_cuda_env(assignment))
    return env


def _local_cuda_env(assignment: GpuAssignment) -> dict[str, str]:
    if assignment.mig_profile is None:
        indexes = ",".join(str(d.index) for d in assignment.devices)
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": indexes}
    unknown = [d.unit for d in assignment.devices if not d.mig_uuid]
    if unknown:
        raise GpuAssignmentError(
            f"booking {assignment.booking_id}: a local process reaches a MIG slice only by its "
            f"MIG UUID, which the inventory does not give for {', '.join(unknown)}; use the "
            "Docker or Kubernetes backend for MIG slices"
        )
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(d.mig_uuid) for d in assignment.devices)}


# -- Kubernetes -------------------------------------------------------------------------


class KubeResourceNames(BaseModel):
    """Extended resource names of the NVIDIA device plugin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str = "nvidia.com/gpu"
    #: the plugin's "mixed" MIG strategy; use "nvidia.com/gpu" for its "single" strategy
    mig: str = "nvidia.com/mig-{profile}"


def kube_resources(
    assignment: GpuAssignment | None, resource_names: KubeResourceNames | None = None
) -> dict[str, dict[str, str]]:
    """Container ``limits`` (and equal ``requests``, as Kubernetes requires of extended
    resources) for the booked count; CPU-only servers get an explicit zero GPUs.

    Quantities are strings, as the Kubernetes API writes them."""
    names = resource_names or KubeResourceNames()
    limits = {names.gpu: "0"}
    real = _real(assignment)
    if real is not None:
        profile = real.mig_profile
        name = names.gpu if profile is None else names.mig.format(profile=profile)
        limits[name] = str(real.count)
    return {"limits": dict(limits), "requests": dict(limits)}


def kube_node_selector(
    assignment: GpuAssignment | None,
    *,
    node_label: str = "kubernetes.io/hostname",
    product_label: str | None = "nvidia.com/gpu.product",
    product_names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Pin a GPU pod to the booked node (werkhub node names are the nodes' host names).

    The model label is added only where ``product_names`` maps the booked type (looked up
    first, e.g. ``"A100-80GB:3g.40gb"``) or model (e.g. ``"H100"``) to the label's value,
    such as GPU Feature Discovery's ``"NVIDIA-H100-80GB-HBM3"``: werkhub's short model
    names are not those values, and a wrong value would leave the pod pending for ever."""
    real = _real(assignment)
    if real is None:
        return {}
    selector = {node_label: real.node}
    products = product_names or {}
    product = products.get(real.gpu_type) or products.get(real.model)
    if product_label and product:
        selector[product_label] = product
    return selector


def kube_tolerations(
    assignment: GpuAssignment | None, *, taint_key: str = "nvidia.com/gpu"
) -> list[dict[str, str]]:
    """GPU pods tolerate the GPU nodes' taint; CPU pods do not, so they stay off them."""
    if _real(assignment) is None:
        return []
    return [{"key": taint_key, "operator": "Exists", "effect": "NoSchedule"}]
