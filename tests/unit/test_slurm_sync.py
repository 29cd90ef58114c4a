"""The service's Slurm wiring without a cluster: which new bookings are held at once (whole
nodes only), how the cluster's GPUs may drift from the units booked, a refusal's status
kept, and one booking held through a scripted Slurm command line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from werkhub.booking import ledger
from werkhub.booking.ledger import Slot, State
from werkhub.config.schema import GpuDevice, GpuNode, SlurmSection, WerkhubConfig
from werkhub.service import slurm_sync
from werkhub.slurm.cluster import Completed, SlurmClient
from werkhub.slurm.errors import NoOsAccount, SlurmConflict
from werkhub.slurm.inventory import NodeStatus, SlurmInventory

#: a fixed instant; the code under test reads the time through the ledger's clock seam
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "utcnow", lambda: NOW)


def stock(**gpus: int) -> SlurmInventory:
    nodes = [
        GpuNode(name=n, devices=[GpuDevice(index=i, model="a100", memory_gb=80) for i in range(k)])
        for n, k in gpus.items()
    ]
    status = {n: NodeStatus(state="IDLE", usable=True) for n in gpus}
    return SlurmInventory(partition="gpu", nodes=tuple(nodes), status=status)


def booking(devices: list[str], *, minutes: int = 30, state: str = "booked") -> dict[str, Any]:
    return {
        "id": 7,
        "user": "alice",
        "start": NOW,
        "end": NOW + timedelta(minutes=minutes),
        "state": state,
        "devices": devices,
    }


def test_only_bookings_of_whole_nodes_are_held_at_once() -> None:
    cluster = stock(node1=1, node3=2)
    spec = slurm_sync.whole_node_spec(booking(["node1/0"]), cluster, NOW)
    assert spec is not None
    assert (spec.name, spec.nodes, spec.user, spec.partition) == (
        "werkhub-b7",
        ("node1",),
        "alice",  # mapped to the OS user by the caller
        "gpu",
    )
    both = slurm_sync.whole_node_spec(booking(["node3/0", "node3/1"]), cluster, NOW)
    assert both is not None and both.nodes == ("node3",)
    assert slurm_sync.whole_node_spec(booking(["node3/0"]), cluster, NOW) is None
    assert slurm_sync.whole_node_spec(booking(["node1/0"], state="cancelled"), cluster, NOW) is None


def test_slots_read_as_the_apis_view_and_unit_drift_is_named() -> None:
    slot = Slot(
        id=3,
        user="bob",
        gpu_type="a100",
        count=1,
        start=NOW,
        end=NOW + timedelta(hours=1),
        devices=("node2/0",),
        state=State.ACTIVE,
    )
    view = slurm_sync.as_booking(slot)
    assert view["state"] == "active" and view["devices"] == ["node2/0"] and view["id"] == 3
    assert slurm_sync.unit_changes(["node1/0", "node2/0"], stock(node1=1, node3=1)) == [
        "node2/0 is gone from Slurm",
        "node3/0 is new in Slurm (werkhub books it after a restart)",
    ]
    assert slurm_sync.unit_changes(["node1/0"], stock(node1=1)) == []


def test_a_refusal_keeps_its_status_and_names_the_booking() -> None:
    refused = slurm_sync.NotHeld(SlurmConflict("Slurm refused to reserve node1: overlaps"), 7)
    assert refused.status == 409
    assert str(refused) == "Slurm refused to reserve node1: overlaps; booking 7 was withdrawn"


def test_without_slurm_enabled_nothing_changes() -> None:
    cfg = WerkhubConfig()
    assert slurm_sync.connect(cfg) == (cfg, None)


def scripted(calls: list[list[str]]) -> SlurmClient:
    """A Slurm that has no reservations and accepts every command."""

    def runner(argv: Sequence[str], env: Any, timeout: float) -> Completed:
        calls.append(list(argv))
        return Completed(0, "", "")

    return SlurmClient(runner=runner, sleep=lambda _: None)


def test_a_new_booking_is_held_for_its_os_user_or_refused_without_one() -> None:
    # root exists on every machine: hub alice runs Slurm jobs as root here
    section = SlurmSection(enabled=True, user_mapping={"mode": "map", "map": {"alice": "root"}})
    sync = slurm_sync.SlurmSync(section, stock(node1=1, node3=2), SlurmClient())
    calls: list[list[str]] = []
    sync.quick = scripted(calls)
    spec = sync.hold(booking(["node1/0"]))
    assert spec is not None and spec.user == "root"
    create = next(c for c in calls if c[1] == "create")
    assert "ReservationName=werkhub-b7" in create and "Users=root" in create
    assert "Nodes=node1" in create
    calls.clear()
    assert sync.hold(booking(["node3/0"])) is None and calls == []  # part of a node
    with pytest.raises(NoOsAccount, match="carol"):
        sync.hold({**booking(["node1/0"]), "user": "carol"})
    assert calls == []  # nothing asked of Slurm
    status = sync.status()
    assert status["enabled"] is True and status["report"] is None and status["recent"] == []
    assert status["nodes"]["node3"]["usable"] is True
