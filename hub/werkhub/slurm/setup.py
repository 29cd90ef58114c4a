"""The Slurm backend as ``werkhub.yaml`` sets it up: the client of the configured cluster
and its GPU inventory, for the service and the command line alike."""

from __future__ import annotations

from werkhub.config.schema import SlurmSection
from werkhub.slurm import inventory
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.errors import SlurmInvalid
from werkhub.slurm.inventory import SlurmInventory


def client(section: SlurmSection, *, retry_seconds: float | None = None) -> SlurmClient:
    """The configured cluster's client; ``retry_seconds`` shortens the retries (a request
    that a person waits for)."""
    retry = section.retry_seconds if retry_seconds is None else retry_seconds
    return SlurmClient(section.conf, timeout=section.command_timeout_seconds, retry_seconds=retry)


def read_inventory(section: SlurmSection, using: SlurmClient | None = None) -> SlurmInventory:
    """The GPU nodes of the configured partition, as the cluster says now; a
    :class:`SlurmInvalid` when it has none (werkhub would have nothing to book)."""
    found = inventory.read(using or client(section), section.partition, section.gpu_types)
    if not found.nodes:
        raise SlurmInvalid(
            f"the Slurm partition '{found.partition}' has no node with GPUs "
            "(Gres=gpu:TYPE:N in slurm.conf), so werkhub has nothing to book; "
            "check slurm.partition",
            reason="no GPU nodes",
            field="slurm.partition",
        )
    return found
