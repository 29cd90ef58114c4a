"""The GPU inventory read from the real cluster: nodes, GPU types and counts from their
gres, the ledger's unit ids, node states; an unknown partition is a clear error."""

from __future__ import annotations

import pytest

from tests.slurm.cluster import SlurmCluster
from tests.slurm.support import PARTITION
from werkhub.config.schema import SlurmGpuType
from werkhub.gpus.inventory import build_units, describe
from werkhub.slurm import inventory
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.errors import SlurmInvalid


def test_inventory_is_the_clusters_gpus(client: SlurmClient) -> None:
    stock = inventory.read(client, PARTITION)
    assert stock.partition == PARTITION
    assert {n.name: len(n.devices) for n in stock.nodes} == {"node1": 1, "node2": 1, "node3": 2}
    assert {d.model for n in stock.nodes for d in n.devices} == {"a100"}
    units = [u.id for u in build_units(stock.section())]
    assert units == ["node1/0", "node2/0", "node3/0", "node3/1"]
    (kind,) = describe(stock.section())["types"]
    assert kind["gpu_type"] == "a100" and kind["units"] == 4 and kind["max_per_node"] == 2
    assert not kind["simulated"]
    assert stock.unusable() == {}
    # the default partition when none is named; types renamed by slurm.gpu_types
    named = inventory.read(client, "", {"a100": SlurmGpuType(model="A100-80GB", memory_gb=80)})
    assert named.partition == PARTITION
    assert {d.model for n in named.nodes for d in n.devices} == {"A100-80GB"}


def test_a_down_node_is_listed_unusable(slurm_cluster: SlurmCluster, client: SlurmClient) -> None:
    slurm_cluster.scontrol("update", "NodeName=node2", "State=DOWN", "Reason=fan broken")
    try:
        stock = inventory.read(client, PARTITION)
        assert [n.name for n in stock.nodes] == ["node1", "node2", "node3"]
        state = stock.unusable()["node2"]
        assert state.startswith("DOWN") and "(fan broken" in state, state
        assert set(stock.unusable()) == {"node2"}
    finally:
        slurm_cluster.scontrol("update", "NodeName=node2", "State=RESUME")
        slurm_cluster.wait_idle()
    assert inventory.read(client, PARTITION).unusable() == {}


def test_unknown_partition_is_a_clear_error(client: SlurmClient) -> None:
    with pytest.raises(SlurmInvalid, match=r"no partition 'nope' \(it has: gpu, cpu") as caught:
        inventory.read(client, "nope")
    assert caught.value.status == 422 and caught.value.field == "slurm.partition"
