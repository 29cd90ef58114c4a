"""The GPU inventory of a Slurm cluster, as werkhub's GPU nodes.

Each node of the partition with ``Gres=gpu:TYPE:N`` becomes a ``GpuNode`` with devices
0..N-1 (types in the order Slurm lists them), so the ledger's units
(:func:`werkhub.gpus.inventory.build_units`: ``<node>/<index>``) are the cluster's GPUs.
Slurm does not say how much memory a GPU has; ``slurm.gpu_types`` says it (and may rename
the type). Node states travel along: a down or drained node is still listed, marked unusable.

``from_nodes`` is pure; ``read`` asks the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from werkhub.config.schema import GpuDevice, GpuNode, GpusSection, SlurmGpuType
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.commands import Node, Partition
from werkhub.slurm.errors import SlurmInvalid

#: the model name of an untyped GPU (``Gres=gpu:2``)
UNTYPED = "gpu"


class NodeStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: str
    usable: bool
    reason: str = ""


class SlurmInventory(BaseModel):
    """The GPU nodes of one partition, and each node's state."""

    model_config = ConfigDict(frozen=True)

    partition: str
    nodes: tuple[GpuNode, ...]
    status: dict[str, NodeStatus]

    def section(self) -> GpusSection:
        """As the ``gpus`` section werkhub's ledger and ``describe`` read."""
        return GpusSection(nodes=list(self.nodes), simulated=False)

    def unusable(self) -> dict[str, str]:
        """Nodes that run no new jobs now, with their state and Slurm's reason."""
        return {
            name: f"{s.state}{f' ({s.reason})' if s.reason else ''}"
            for name, s in self.status.items()
            if not s.usable
        }

    def describe(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "nodes": [{**n.model_dump(), **self.status[n.name].model_dump()} for n in self.nodes],
            "unusable": self.unusable(),
        }


def choose_partition(partitions: Sequence[Partition], wanted: str) -> Partition:
    """``wanted``, or the default partition when ``wanted`` is empty; a clear
    :class:`SlurmInvalid` when the cluster has no such partition."""
    names = ", ".join(p.name for p in partitions) or "none"
    for partition in partitions:
        if (wanted and partition.name == wanted) or (not wanted and partition.default):
            return partition
    if wanted:
        raise SlurmInvalid(
            f"the Slurm cluster has no partition '{wanted}' (it has: {names}); "
            "check slurm.partition",
            reason="Invalid partition name specified",
            field="slurm.partition",
        )
    raise SlurmInvalid(
        f"the Slurm cluster has no default partition (it has: {names}); set slurm.partition",
        reason="no default partition",
        field="slurm.partition",
    )


def from_nodes(
    nodes: Sequence[Node],
    partition: Partition,
    gpu_types: Mapping[str, SlurmGpuType] | None = None,
) -> SlurmInventory:
    """The GPU nodes among ``nodes`` that belong to ``partition`` (pure)."""
    gpu_types = gpu_types or {}
    members = set(partition.nodes)
    gpu_nodes, status = [], {}
    for node in nodes:
        if node.name not in members or not node.gpus:
            continue
        devices = []
        for gres in node.gpus:
            kind = gpu_types.get(gres.type or UNTYPED)
            model = (kind.model if kind else "") or gres.type or UNTYPED
            memory = kind.memory_gb if kind else 1
            for _ in range(gres.count):
                devices.append(GpuDevice(index=len(devices), model=model, memory_gb=memory))
        try:
            gpu_nodes.append(GpuNode(name=node.name, devices=devices))
        except ValidationError:
            status[node.name] = NodeStatus(
                state=node.state.text,
                usable=False,
                reason="werkhub cannot book a node of this name (use lowercase a-z 0-9 . -)",
            )
            continue
        status[node.name] = NodeStatus(
            state=node.state.text, usable=node.state.usable, reason=node.reason
        )
    return SlurmInventory(partition=partition.name, nodes=tuple(gpu_nodes), status=status)


def read(
    client: SlurmClient,
    partition: str = "",
    gpu_types: Mapping[str, SlurmGpuType] | None = None,
) -> SlurmInventory:
    """The inventory of ``partition`` (the default one when empty) as the cluster says now."""
    chosen = choose_partition(client.partitions(), partition)
    return from_nodes(client.nodes(), chosen, gpu_types)
