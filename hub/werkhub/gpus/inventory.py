"""GPU inventory: from werkhub.yaml, a simulated demo, or discovered through NVML."""

from __future__ import annotations

from typing import Any

from werkhub.booking.ledger import Unit
from werkhub.config.schema import GpuDevice, GpuNode, GpusSection, MigSlices
from werkhub.errors import Unavailable

#: what a machine without configured GPUs offers: clearly marked as simulated
DEMO_NODES = [
    GpuNode(
        name="demo",
        devices=[
            GpuDevice(index=0, uuid="GPU-SIMULATED-0", model="H100", memory_gb=80),
            GpuDevice(index=1, uuid="GPU-SIMULATED-1", model="H100", memory_gb=80),
            GpuDevice(index=2, uuid="GPU-SIMULATED-2", model="L40S", memory_gb=48),
            GpuDevice(
                index=3,
                uuid="GPU-SIMULATED-3",
                model="A100-80GB",
                memory_gb=80,
                mig=[MigSlices(profile="3g.40gb", count=2)],
            ),
        ],
    )
]


class NvmlUnavailable(Unavailable, RuntimeError):
    """No NVIDIA driver (or no GPU) on this machine."""


def effective_nodes(section: GpusSection) -> tuple[list[GpuNode], bool]:
    """The configured nodes, or the demo inventory; and whether they are simulated."""
    if section.nodes:
        return list(section.nodes), section.simulated
    return DEMO_NODES, True


def mig_type(model: str, profile: str) -> str:
    return f"{model}:{profile}"


def build_units(section: GpusSection) -> list[Unit]:
    """Every bookable unit: whole GPUs, or the MIG slices of a partitioned GPU."""
    nodes, simulated = effective_nodes(section)
    units = []
    for node in nodes:
        for dev in node.devices:
            if not dev.mig:
                units.append(
                    Unit(
                        id=f"{node.name}/{dev.index}",
                        node=node.name,
                        gpu_type=dev.model,
                        index=dev.index,
                        simulated=simulated,
                    )
                )
                continue
            n = 0
            for slices in dev.mig:
                for _ in range(slices.count):
                    units.append(
                        Unit(
                            id=f"{node.name}/{dev.index}/{slices.profile}-{n}",
                            node=node.name,
                            gpu_type=mig_type(dev.model, slices.profile),
                            index=dev.index * 100 + n,
                            simulated=simulated,
                        )
                    )
                    n += 1
    return units


def describe(section: GpusSection) -> dict[str, Any]:
    """Inventory for the API: nodes with devices, and the bookable types with counts."""
    nodes, simulated = effective_nodes(section)
    units = build_units(section)
    types: dict[str, dict[str, Any]] = {}
    for unit in units:
        entry = types.setdefault(
            unit.gpu_type,
            {"gpu_type": unit.gpu_type, "units": 0, "max_per_node": 0, "simulated": simulated},
        )
        entry["units"] += 1
    for gpu_type, entry in types.items():
        per_node: dict[str, int] = {}
        for unit in units:
            if unit.gpu_type == gpu_type:
                per_node[unit.node] = per_node.get(unit.node, 0) + 1
        entry["max_per_node"] = max(per_node.values())
    return {
        "simulated": simulated,
        "nodes": [n.model_dump() for n in nodes],
        "units": [u.model_dump() for u in units],
        "types": sorted(types.values(), key=lambda t: t["gpu_type"]),
    }


def discover(node_name: str) -> GpuNode:
    """Read this machine's GPUs through NVML (package nvidia-ml-py)."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(
            f"no NVIDIA driver found on this machine (NVML: {exc}); describe the GPUs "
            "of your GPU servers in werkhub.yaml under gpus.nodes instead"
        ) from None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    model=model_name(name, memory),
                    memory_gb=round(memory, 1),
                    mig=_mig_slices(pynvml, handle),
                )
            )
        if not devices:
            raise NvmlUnavailable("the NVIDIA driver reports no GPUs on this machine")
        return GpuNode(name=node_name, devices=devices)
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def model_name(nvml_name: str, memory_gb: float) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; 'NVIDIA A100-SXM4-80GB' -> 'A100-80GB'."""
    words = nvml_name.replace("NVIDIA", "").replace("Tesla", "").split()
    base = words[0].split("-")[0] if words else "GPU"
    if base.startswith("A100"):
        return f"A100-{round(memory_gb / 8) * 8 if memory_gb > 60 else 40}GB"
    return base


def _mig_slices(pynvml: Any, handle: Any) -> list[MigSlices]:
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:
        return []
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return []
    counts: dict[str, int] = {}
    for i in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except pynvml.NVMLError:
            continue
        attrs = pynvml.nvmlDeviceGetAttributes(mig)
        memory_gb = round(attrs.memorySizeMB / 1024)
        profile = f"{attrs.gpuInstanceSliceCount}g.{memory_gb}gb"
        counts[profile] = counts.get(profile, 0) + 1
    return [MigSlices(profile=p, count=c) for p, c in sorted(counts.items())]
