"""Bookings of part of a node, enforced by Slurm's preemption (docs/slurm.md, "Bookings of
part of a node"): during a booked slot no other Slurm user's job holds the booked GPUs
(one running on them is requeued at the slot's start, new ones wait), the booked user's job
in the booking's partition starts within a stated bound, and extend, shorten and cancel
change or remove what Slurm holds; work Slurm does not preempt is requeued by the
reconciliation. GRES reservations are tried and found refused (22.05)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.slurm.cluster import HOLD_PARTITION, STEADY_PARTITION, SlurmCluster
from tests.slurm.support import START_BOUND_S, booking, hold, running, wait_job
from tests.support.summary import note
from werkhub.booking import ledger
from werkhub.slurm import partial, preempt
from werkhub.slurm.cluster import SlurmClient

#: node3 has two GPUs; the bookings here hold one of them
NODE = "node3"


def gpus_of(client: SlurmClient, user: str, node: str = NODE) -> int:
    """GPUs ``user``'s running jobs (holds left out) hold on ``node`` now."""
    return sum(
        j.gpus
        for j in preempt.jobs(client)
        if j.state == "RUNNING" and j.user == user and node in j.nodes and j.hold is None
    )


def hold_jobs(client: SlurmClient, booking_id: int) -> list[partial.SlurmJob]:
    return [j for j in preempt.jobs(client) if j.live and j.hold == (booking_id, NODE)]


def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - began


def test_a_booked_gpu_is_taken_back_from_others_and_kept_for_its_user(
    slurm_cluster: SlurmCluster,
    client: SlurmClient,
    os_users: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    bob = os_users["bob"]
    # bob runs on both GPUs of node3 before anything is booked
    bobs = [slurm_cluster.submit(bob, f"--nodelist={NODE}") for _ in range(2)]
    for job_id in bobs:
        wait_job(client, job_id, running)
    assert gpus_of(client, bob) == 2

    # alice's booking of one GPU of node3 starts now: her partition is open, the hold job
    # takes one GPU back at once (Slurm requeues one of bob's jobs)
    alice = booking(1, "alice", [f"{NODE}/0"])
    report = hold(client, [alice])
    assert report.ok, report.lines()
    assert [c.name for c in report.partitions] == ["werkhub-b1"]
    assert [c.name for c in report.holds] == [f"werkhub-h1-{NODE}"]
    (part,) = [p for p in preempt.partitions(client) if p.name == "werkhub-b1"]
    assert part.nodes == (NODE,) and part.allow_groups == ("wh-alice",) and part.state == "UP"
    taken = until(
        lambda: [j.state for j in hold_jobs(client, 1)] == ["RUNNING"], START_BOUND_S, "hold"
    )
    assert gpus_of(client, bob) == 1
    requeued = [client.job(j) for j in bobs]
    assert sorted(j.state for j in requeued if j) == ["PENDING", "RUNNING"]

    # new work of bob's cannot take the booked GPU, and bob cannot use alice's partition
    pinned = slurm_cluster.submit(bob, f"--nodelist={NODE}")
    time.sleep(2)
    assert gpus_of(client, bob) == 1
    with pytest.raises(RuntimeError, match="not permitted"):
        slurm_cluster.submit(bob, "--partition=werkhub-b1", wrap="true")

    # alice's job in her partition starts within the bound, on node3 with one GPU
    began = time.monotonic()
    mine = slurm_cluster.submit(os_users["alice"], "--partition=werkhub-b1")
    job = wait_job(client, mine, running, timeout=START_BOUND_S)
    started = time.monotonic() - began
    assert job.nodes == (NODE,)
    # the next round gives the hold's GPU to alice's job: no hold left while it runs
    report = hold(client, [alice])
    assert report.ok, report.lines()
    until(lambda: not hold_jobs(client, 1), 30, "the hold gives way")
    assert gpus_of(client, os_users["alice"]) == 1
    until(lambda: gpus_of(client, bob) == 1, 30, "bob's other job runs again")
    time.sleep(2)
    assert gpus_of(client, bob) == 1  # never the booked one
    note(
        request.config,
        f"slurm       part of a node: hold running {taken:.1f} s after the round, the "
        f"booked job {started:.1f} s after submission (bound {START_BOUND_S} s)",
    )

    # alice's job ends: the hold comes back at the next round
    slurm_cluster.cancel(mine)
    until(lambda: gpus_of(client, os_users["alice"]) == 0, 30, "alice's job ends")
    report = hold(client, [alice])
    assert [c.action for c in report.holds] == ["create"], report.lines()
    until(lambda: [j.state for j in hold_jobs(client, 1)] == ["RUNNING"], 30, "hold again")
    assert gpus_of(client, bob) <= 1

    # cancelled: partition and hold gone, bob gets the GPU back
    report = hold(client, [])
    assert [c.action for c in report.partitions] == ["delete"], report.lines()
    assert [c.action for c in report.holds] == ["delete"], report.lines()
    assert not any(p.name == "werkhub-b1" for p in preempt.partitions(client))
    until(lambda: not hold_jobs(client, 1), 30, "the hold ends")
    # (requeued jobs wait about two minutes before Slurm starts them again: a new one)
    again = slurm_cluster.submit(bob, f"--nodelist={NODE}")
    wait_job(client, again, running)
    assert gpus_of(client, bob) == 2
    slurm_cluster.cancel(*bobs, pinned, again)


def test_a_future_slot_is_taken_by_slurm_at_its_start(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    bob = os_users["bob"]
    bobs = [slurm_cluster.submit(bob, f"--nodelist={NODE}") for _ in range(2)]
    for job_id in bobs:
        wait_job(client, job_id, running)
    start = ledger.utcnow().replace(microsecond=0) + timedelta(seconds=8)
    alice = booking(2, "alice", [f"{NODE}/1"], start=start, state="booked")
    report = hold(client, [alice])
    assert report.ok, report.lines()
    (part,) = [p for p in preempt.partitions(client) if p.name == "werkhub-b2"]
    assert part.state == "DOWN"  # before the slot: alice's jobs queue, none starts
    (pending,) = hold_jobs(client, 2)
    assert pending.state == "PENDING" and gpus_of(client, bob) == 2
    # no round runs: Slurm starts the hold at the slot's start and requeues one of bob's
    until(lambda: gpus_of(client, bob) == 1, (start - ledger.utcnow()).total_seconds() + 30, "x")
    assert ledger.utcnow() >= start - timedelta(seconds=1)
    # requeueing bob's job and starting the hold are two steps of Slurm's: the hold follows
    until(lambda: [j.state for j in hold_jobs(client, 2)] == ["RUNNING"], 30, "the hold runs")
    assert gpus_of(client, bob) == 1
    # the round at the start opens alice's partition
    report = hold(client, [alice])
    assert [(c.action, c.name) for c in report.partitions] == [("update", "werkhub-b2")]
    assert "State DOWN in Slurm, UP in the ledger" in report.partitions[0].detail


def test_a_booking_far_ahead_costs_slurm_nothing_yet(
    client: SlurmClient, os_users: dict[str, str]
) -> None:
    """Partition and hold are made LEAD (10 minutes) before the slot, not at booking time."""
    start = ledger.utcnow().replace(second=0, microsecond=0) + timedelta(hours=2)
    far = booking(6, "alice", [f"{NODE}/0"], start=start, state="booked")
    report = hold(client, [far])
    assert report.ok and not report.partitions and not report.holds, report.lines()
    assert not hold_jobs(client, 6)
    assert "werkhub-b6" not in {p.name for p in preempt.partitions(client)}


def test_extend_shorten_and_end_move_the_hold(
    client: SlurmClient, os_users: dict[str, str]
) -> None:
    alice = booking(3, "alice", [f"{NODE}/0"], minutes=30)
    assert hold(client, [alice]).ok
    until(lambda: [j.state for j in hold_jobs(client, 3)] == ["RUNNING"], 30, "hold")
    (first,) = hold_jobs(client, 3)
    longer = {**alice, "end": alice["end"] + timedelta(minutes=30)}
    report = hold(client, [longer])
    assert [c.action for c in report.holds] == ["update"], report.lines()
    (held,) = hold_jobs(client, 3)
    assert held.id == first.id and held.end is not None
    assert abs((held.end - longer["end"]).total_seconds()) < 60
    shorter = {**alice, "end": alice["end"] - timedelta(minutes=20)}
    hold(client, [shorter])
    (held,) = hold_jobs(client, 3)
    assert held.end is not None and abs((held.end - shorter["end"]).total_seconds()) < 60
    # released, no-show or ended: the booking no longer holds, and neither does Slurm
    report = hold(client, [{**alice, "state": "released"}])
    assert {c.action for c in report.holds} == {"delete"}
    until(lambda: not hold_jobs(client, 3), 30, "the hold ends")


def test_work_slurm_does_not_preempt_is_requeued_by_the_reconciliation(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    """Jobs of a partition with PreemptMode=OFF keep a hold waiting; the next round requeues
    as many of them as the hold needs, newest first, and reports it."""
    bob = os_users["bob"]
    steady = [
        slurm_cluster.submit(bob, f"--nodelist={NODE}", f"--partition={STEADY_PARTITION}")
        for _ in range(2)
    ]
    for job_id in steady:
        wait_job(client, job_id, running)
    alice = booking(5, "alice", [f"{NODE}/0"])
    report = hold(client, [alice])
    assert [c.action for c in report.holds] == ["create"] and not report.preempted
    until(
        lambda: [j.reason for j in hold_jobs(client, 5)] in (["Resources"], ["Priority"]),
        30,
        "the hold to wait for resources",
    )
    assert gpus_of(client, bob) == 2  # Slurm does not preempt them
    started = {j: client.job(j) for j in steady}
    newest = max(steady, key=lambda j: (started[j].start, int(j)))  # type: ignore[union-attr]
    report = hold(client, [alice])
    (requeued,) = report.preempted
    assert requeued.name == f"job {newest}", report.lines()
    assert "booked by someone else" in requeued.detail
    assert f"requeued job {newest}" in "\n".join(report.lines())
    until(lambda: [j.state for j in hold_jobs(client, 5)] == ["RUNNING"], 30, "the hold runs")
    assert gpus_of(client, bob) == 1
    assert not hold(client, [alice]).preempted  # nothing more to do


def test_more_gpus_than_booked_in_the_bookings_partition_are_cancelled(
    slurm_cluster: SlurmCluster, client: SlurmClient, os_users: dict[str, str]
) -> None:
    alice = booking(7, "alice", [f"{NODE}/0"])
    assert hold(client, [alice]).ok
    greedy = slurm_cluster.submit(os_users["alice"], "--partition=werkhub-b7", "--gres=gpu:2")
    wait_job(client, greedy, running)  # Slurm lets the partition's user take both
    report = hold(client, [alice])
    (cancelled,) = report.preempted
    assert cancelled.name == f"job {greedy}" and cancelled.booking_id == 7
    assert f"cancelled job {greedy}: " in "\n".join(report.lines())
    wait_job(client, greedy, lambda job: job.state == "CANCELLED")
    report = hold(client, [alice])  # the hold is back; alice has her one GPU again
    until(lambda: [j.state for j in hold_jobs(client, 7)] == ["RUNNING"], 30, "hold")


def test_gres_reservations_are_tried_not_assumed(client: SlurmClient) -> None:
    supported, why = preempt.gres_reservations(client, NODE)
    assert not supported  # Slurm 22.05: whole nodes only
    assert "gres/gpu" in why, why
    assert client.reservation(preempt.PROBE) is None


def test_without_the_hold_partition_the_booking_is_reported_not_held(
    client: SlurmClient, os_users: dict[str, str]
) -> None:
    report = hold(client, [booking(4, "alice", [f"{NODE}/0"])], hold_partition="nowhere")
    (failure,) = report.failed
    assert "no partition 'nowhere'" in failure.error and failure.booking_id == 4
    assert not hold_jobs(client, 4)
    assert HOLD_PARTITION in {p.name for p in preempt.partitions(client)}
