"""Bookings enforced by Slurm itself: a booking of whole nodes becomes a reservation for the
booked user's OS account; during the slot no other user's job gets those GPUs and the booked
user's job starts within a stated bound; extend, shorten, cancel, release and no-show change
or remove what Slurm holds; a booking of part of a node is held by a partition and a hold
job, not a reservation."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.slurm.cluster import SlurmCluster
from tests.slurm.support import (
    START_BOUND_S,
    booking,
    hold,
    minute,
    reservation,
    running,
    wait_job,
    wanted,
)
from werkhub.booking import ledger
from werkhub.slurm import commands, reservations
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.errors import SlurmConflict


def test_a_booked_node_is_held_for_its_user_only(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    alice = booking(1, "alice", ["node1/0"])
    report = hold(client, [alice])
    assert [c.name for c in report.created] == ["werkhub-b1"] and report.ok, report.lines()
    held = reservation(client, 1)
    assert held is not None
    assert held.nodes == ("node1",) and held.users == ("wh-alice",)
    assert held.end == alice["end"] and held.state == "ACTIVE"
    assert held.partition == "gpu"

    # bob asks for more GPUs than the unreserved nodes have: three run on node2 and node3,
    # the fourth waits; none of them is placed on node1
    bobs = [slurm_cluster.submit(os_users["bob"]) for _ in range(4)]
    jobs = [wait_job(client, j, lambda job: job.state in ("RUNNING", "PENDING")) for j in bobs]
    deadline = time.monotonic() + 30
    while sum(j.state == "RUNNING" for j in jobs) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        jobs = [client.job(j) or jobs[i] for i, j in enumerate(bobs)]
    time.sleep(2)  # more scheduling passes: the fourth keeps waiting
    jobs = [client.job(j) for j in bobs]
    assert sorted(j.state for j in jobs if j) == ["PENDING", "RUNNING", "RUNNING", "RUNNING"]
    assert all("node1" not in j.nodes for j in jobs if j)
    # bob asking for node1 itself waits; bob asking for alice's reservation is refused
    pinned = slurm_cluster.submit(os_users["bob"], "--nodelist=node1")
    time.sleep(2)
    job = client.job(pinned)
    assert job is not None and job.state == "PENDING" and not job.nodes
    assert "Reserv" in job.reason or "ReqNodeNotAvail" in job.reason, job.reason
    argv = commands.sbatch_argv(
        user=os_users["bob"],
        partition="gpu",
        gpus=1,
        minutes=5,
        workdir=str(slurm_cluster.jobs_dir),
        wrap="sleep 300",
        reservation="werkhub-b1",
        output="/dev/null",
    )
    with pytest.raises(SlurmConflict, match="Access denied to requested reservation"):
        client.submit(argv)

    # alice's job in her reservation starts on node1 within the bound
    submitted = time.monotonic()
    job_id = client.submit([*argv[:2], f"--uid={os_users['alice']}", f"--gid={os_users['alice']}",
                            *argv[4:]])  # fmt: skip
    job = wait_job(client, job_id, running, timeout=START_BOUND_S)
    started = time.monotonic() - submitted
    assert job.nodes == ("node1",) and job.user == "wh-alice" and job.reservation == "werkhub-b1"
    assert started < START_BOUND_S
    print(f"alice's job started {started:.1f} s after submission")


def test_extend_shorten_and_end(client: SlurmClient, os_users: dict[str, str]) -> None:
    """Every way a booking changes in the ledger changes what Slurm holds."""
    now = minute(ledger.utcnow())
    ring = [
        booking(2, "alice", ["node2/0"], start=now),
        booking(3, "bob", ["node3/0", "node3/1"], start=now + timedelta(hours=2)),
        booking(4, "alice", ["node1/0"], start=now + timedelta(hours=3)),
        booking(5, "bob", ["node1/0"], start=now + timedelta(hours=5)),
    ]
    report = hold(client, ring)
    assert sorted(c.name for c in report.created) == [f"werkhub-b{i}" for i in (2, 3, 4, 5)]
    held = reservation(client, 3)
    assert held is not None and held.state == "INACTIVE" and held.nodes == ("node3",)
    assert held.start == ring[1]["start"]

    # extend booking 2 by 30 minutes, shorten booking 3 by 10
    ring[0] = {**ring[0], "end": ring[0]["end"] + timedelta(minutes=30)}
    ring[1] = {**ring[1], "end": ring[1]["end"] - timedelta(minutes=10)}
    report = hold(client, ring)
    assert sorted(c.name for c in report.updated) == ["werkhub-b2", "werkhub-b3"], report.lines()
    assert not report.created and not report.deleted
    assert "in the ledger" in report.updated[0].detail
    two, three = reservation(client, 2), reservation(client, 3)
    assert two is not None and two.end == ring[0]["end"]
    assert three is not None and three.end == ring[1]["end"]
    assert hold(client, ring).repaired == []  # nothing left to do

    # cancel 3, release 2 (ended early), no-show 4, 5 ended: every reservation goes
    ring[1] = {**ring[1], "state": "cancelled"}
    ring[0] = {**ring[0], "state": "released"}
    ring[2] = {**ring[2], "state": "no_show"}
    ring[3] = {**ring[3], "state": "ended"}
    report = hold(client, ring)
    assert sorted(c.name for c in report.deleted) == [f"werkhub-b{i}" for i in (2, 3, 4, 5)]
    assert [r.name for r in client.reservations() if r.managed] == []


def test_single_booking_hold_and_drop(client: SlurmClient, os_users: dict[str, str]) -> None:
    """The path a booking takes when it is made or changed: at once, errors raised."""
    (spec,) = wanted(client, [booking(6, "alice", ["node2/0"])]).specs.values()
    reservations.hold(client, spec)
    reservations.hold(client, spec)  # again: nothing to do
    longer = spec.model_copy(update={"end": spec.end + timedelta(minutes=15)})
    reservations.hold(client, longer)
    held = reservation(client, 6)
    assert held is not None and held.end == longer.end
    reservations.drop(client, 6)
    reservations.drop(client, 6)  # gone already: fine
    assert reservation(client, 6) is None


def test_part_of_a_node_is_held_without_a_reservation(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    """One GPU of node3: no reservation (Slurm 22.05 reserves whole nodes), but a booking
    partition and a hold job (tests/slurm/test_partial_nodes.py tests what they enforce)."""
    report = hold(client, [booking(7, "alice", ["node3/0"])])
    assert report.ok and not report.skipped, report.lines()
    assert not report.created and reservation(client, 7) is None
    assert [c.name for c in report.partitions] == ["werkhub-b7"]
    assert [c.name for c in report.holds] == ["werkhub-h7-node3"]
    assert "created werkhub-h7-node3: 1 GPU of node3 for wh-alice" in "\n".join(report.lines())
