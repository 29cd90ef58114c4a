"""Drift repaired in the ledger's favour and reported; Slurm's refusals (an overlap with a
reservation made outside werkhub, an unknown partition, a hub user without an OS account)
as clear errors with nothing half-made; a controller restart survived."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from tests.slurm.cluster import SlurmCluster
from tests.slurm.support import MAPPING, booking, hold, reservation, wanted
from werkhub.slurm import commands, reservations, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.errors import NoOsAccount, SlurmConflict, SlurmInvalid


def test_drift_is_repaired_and_reported(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    ledger = [booking(11, "alice", ["node1/0"]), booking(12, "bob", ["node2/0"], minutes=60)]
    assert len(hold(client, ledger).created) == 2
    # by hand: one deleted, one shortened and given to root, a stray werkhub one made, and
    # a reservation of someone else's that werkhub must leave alone
    slurm_cluster.scontrol("delete", "ReservationName=werkhub-b11")
    slurm_cluster.scontrol(
        "update", "ReservationName=werkhub-b12", "EndTime=now+10minutes", "Users=root"
    )
    for name, day in (("werkhub-b99", 1), ("maintenance", 2)):
        done = slurm_cluster.scontrol(
            "create", "reservation", f"ReservationName={name}", f"StartTime=now+{day}days",
            "Duration=60", "Users=root", "Nodes=node3",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    report = hold(client, ledger)
    assert report.ok, report.lines()
    assert [(c.name, c.detail) for c in report.created] == [("werkhub-b11", "missing in Slurm")]
    (updated,) = report.updated
    assert updated.name == "werkhub-b12"
    assert "users root in Slurm, wh-bob in the ledger" in updated.detail
    assert "in Slurm" in updated.detail and "end " in updated.detail
    assert [c.name for c in report.deleted] == ["werkhub-b99"]
    lines = "\n".join(report.lines())
    assert "created werkhub-b11: missing in Slurm" in lines and "deleted werkhub-b99" in lines
    twelve = reservation(client, 12)
    assert twelve is not None and twelve.users == ("wh-bob",) and twelve.end == ledger[1]["end"]
    names = {r.name for r in client.reservations()}
    assert names == {"werkhub-b11", "werkhub-b12", "maintenance"}
    assert hold(client, ledger).repaired == []


def test_an_overlap_made_outside_werkhub_is_a_clear_error(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    done = slurm_cluster.scontrol(
        "create", "reservation", "ReservationName=maint", "StartTime=now", "Duration=120",
        "Users=root", "Nodes=node2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # booking 21 needs node1 and node2: Slurm refuses, and node1 is not reserved either
    ledger = [
        booking(21, "alice", ["node1/0", "node2/0"]),
        booking(22, "bob", ["node3/0", "node3/1"]),
    ]
    report = hold(client, ledger)
    (failure,) = report.failed
    assert failure.name == "werkhub-b21" and failure.booking_id == 21 and failure.status == 409
    assert "Requested reservation overlaps with another reservation" in failure.error
    assert "node1, node2" in failure.error and "wh-alice" in failure.error
    assert [c.name for c in report.created] == ["werkhub-b22"]
    assert reservation(client, 21) is None
    # the same at booking time: an error for the person, nothing made
    spec = wanted(client, ledger).specs["werkhub-b21"]
    with pytest.raises(SlurmConflict, match="overlaps with another reservation") as caught:
        reservations.hold(client, spec)
    assert caught.value.status == 409
    assert reservation(client, 21) is None
    held = {r.name: r for r in client.reservations()}
    assert set(held) == {"maint", "werkhub-b22"} and held["maint"].nodes == ("node2",)


def test_bad_input_is_a_clear_error(client: SlurmClient, os_users: dict[str, str]) -> None:
    # an unknown partition in the reservation: Slurm's own words, 422, nothing made
    report = hold(client, [booking(31, "alice", ["node1/0"])], partition="nope")
    (failure,) = report.failed
    assert failure.status == 422 and "Invalid partition name specified" in failure.error
    assert reservation(client, 31) is None
    spec = wanted(client, [booking(31, "alice", ["node1/0"])], partition="nope").specs
    with pytest.raises(SlurmInvalid, match="Invalid partition name specified"):
        reservations.hold(client, spec["werkhub-b31"])
    # a hub user without an OS account: refused before Slurm is asked, naming both
    report = hold(client, [booking(32, "carol", ["node1/0"])])
    (failure,) = report.failed
    assert failure.status == 403
    assert "hub user 'carol' has no OS account 'wh-carol'" in failure.error
    assert reservation(client, 32) is None
    with pytest.raises(NoOsAccount, match="hub user 'carol' has no OS account 'wh-carol'"):
        users.ensure("carol", MAPPING)


def test_controller_restart_loses_nothing(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    first = booking(41, "alice", ["node1/0"])
    assert [c.name for c in hold(client, [first]).created] == ["werkhub-b41"]
    second = booking(42, "bob", ["node2/0"], minutes=45)
    desired = wanted(client, [first, second])
    slurm_cluster.stop_controller()
    assert not client.ping()
    # the controller comes back while the reconciliation is waiting for it
    problems: list[BaseException] = []

    def restart() -> None:
        time.sleep(3)
        try:
            slurm_cluster.start_controller()
        except BaseException as exc:  # handed to the test below
            problems.append(exc)

    restarter = threading.Thread(target=restart)
    restarter.start()
    began = time.monotonic()
    try:
        report = reservations.reconcile(client, desired)
    finally:
        restarter.join()
    if problems:
        raise problems[0]
    waited = time.monotonic() - began
    assert report.ok, report.lines()
    assert [c.name for c in report.created] == ["werkhub-b42"]
    assert waited >= 2.5, "reconcile should have waited for the controller"
    assert client.ping()
    kept = reservation(client, 41)
    assert kept is not None and kept.nodes == ("node1",) and kept.end == first["end"]
    assert kept.users == ("wh-alice",)
    assert reservation(client, 42) is not None
    assert hold(client, [first, second]).repaired == []
    assert commands.reservation_name(41) in {r.name for r in client.reservations()}
    assert first["end"] - first["start"] == timedelta(minutes=30)
    slurm_cluster.wait_idle()
