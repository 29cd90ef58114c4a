"""Bookings of part of a node (pure): the hold jobs and booking partitions a booking calls
for, the steps from what Slurm shows (lines as Slurm 22.05 prints them), and intruders."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from werkhub.slurm import partial
from werkhub.slurm.partial import HoldSpec, PartialSpec, SlurmJob, SlurmPartition

T0 = datetime(2029, 1, 1, 10, tzinfo=UTC)
HOLD_LINE = (
    "JobId=3 JobName=werkhub-h7-node3 UserId=root(0) GroupId=root(0) MCS_label=N/A "
    "JobState=RUNNING Reason=None Dependency=(null) TimeLimit=00:05:00 "
    "StartTime=2029-01-01T10:00:00 EndTime=2029-01-01T10:05:00 Partition=werkhub-hold "
    "ReqNodeList=node3 NodeList=node3 BatchHost=node3 NumNodes=1 "
    "Comment=werkhub hold of booking 7 for wh-alice: 1 GPU on node3 from 2029-01-01T10:00:00 "
    "to 2029-01-01T11:00:00 TresPerNode=gres:gpu:1 "
)
PARTITION_LINE = (
    "PartitionName=werkhub-b7 AllowGroups=wh-alice AllowAccounts=ALL Default=NO "
    "PriorityTier=3 PreemptMode=OFF State=UP Nodes=node3 TotalCPUs=2"
)


def spec(**over: object) -> PartialSpec:
    values: dict[str, object] = {
        "booking_id": 7,
        "hub_user": "alice",
        "user": "wh-alice",
        "gpus": (("node3", 1),),
        "start": T0,
        "end": T0 + timedelta(hours=1),
    }
    return PartialSpec(**{**values, **over})  # type: ignore[arg-type]


def job(**over: object) -> SlurmJob:
    (found,) = partial.parse_jobs(HOLD_LINE)
    return replace(found, **over)  # type: ignore[arg-type]


def test_lines_parsed() -> None:
    held = job()
    assert (held.id, held.hold, held.gpus, held.partition) == ("3", (7, "node3"), 1, "werkhub-hold")
    assert held.comment.endswith("to 2029-01-01T11:00:00") and held.live
    (part,) = partial.parse_partitions(PARTITION_LINE)
    assert part == SlurmPartition("werkhub-b7", ("node3",), "UP", ("wh-alice",), 3)
    assert part.managed
    assert partial.gpu_count("gres:gpu:a100:2") == 2
    assert partial.gpu_count("gres/gpu=1,cpu=2") == 1 and partial.gpu_count("(null)") == 0
    assert partial.hold_of("werkhub-h12-node10") == (12, "node10")
    assert partial.hold_of("wrap") is None


def test_holds_give_way_to_the_booked_users_own_jobs() -> None:
    (h,) = partial.holds([spec()], [], T0)
    assert (h.name, h.gpus, h.node) == ("werkhub-h7-node3", 1, "node3")
    mine = job(id="9", name="wrap", user="wh-alice", comment="", partition="werkhub-b7")
    assert partial.holds([spec()], [mine], T0 + timedelta(minutes=1)) == []
    # before the slot, alice's jobs elsewhere do not count; after its end nothing is held
    assert len(partial.holds([spec()], [mine], T0 - timedelta(minutes=1))) == 1
    assert partial.holds([spec()], [], T0 + timedelta(hours=1)) == []
    two = spec(gpus=(("node3", 2),))
    (h,) = partial.holds([two], [mine], T0 + timedelta(minutes=1))
    assert h.gpus == 1


def test_plan_holds() -> None:
    (h,) = partial.holds([spec()], [], T0)
    assert partial.plan_holds([h], [job()], T0) == []  # the same: nothing to do
    (step,) = partial.plan_holds([h], [], T0)
    assert (step.kind, step.name) == ("submit", "werkhub-h7-node3")
    # the booking was extended: the running hold's time limit changes
    longer = replace(h, end=T0 + timedelta(hours=2))
    (step,) = partial.plan_holds([longer], [job()], T0 + timedelta(minutes=5))
    assert (step.kind, step.job_id, step.minutes) == ("extend", "3", 120)
    # another node or count: cancelled and made anew; no booking: cancelled
    other = replace(h, gpus=2)
    assert [s.kind for s in partial.plan_holds([other], [job()], T0)] == ["cancel", "submit"]
    assert [s.kind for s in partial.plan_holds([], [job()], T0)] == ["cancel"]
    # a duplicate is cancelled; a finished hold is not looked at
    assert [s.kind for s in partial.plan_holds([h], [job(), job(id="4")], T0)] == ["cancel"]
    assert partial.plan_holds([], [job(state="COMPLETED")], T0) == []


def test_hold_argv() -> None:
    (h,) = partial.holds([spec(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2))], [], T0)
    argv = partial.hold_argv(h, "werkhub-hold", T0)
    assert "--partition=werkhub-hold" in argv and "--nodelist=node3" in argv
    assert "--gres=gpu:1" in argv and "--uid=root" in argv and "--time=60" in argv
    assert "--begin=2029-01-01T11:00:00" in argv and argv[-1].startswith("--wrap=")
    under_way = partial.hold_argv(replace(h, start=T0), "werkhub-hold", T0 + timedelta(minutes=30))
    assert not [a for a in under_way if a.startswith("--begin")] and "--time=90" in under_way


def test_booking_partitions() -> None:
    want = partial.partitions([spec()], {"wh-alice": "wh-alice"}, T0 - timedelta(hours=1), 3)
    (step,) = partial.plan_partitions(want, [])
    assert step.kind == "create" and dict(step.settings)["State"] == "DOWN"
    argv = partial.partition_create_argv(step.name, step.settings, 3)
    assert "PriorityTier=3" in argv and "AllowGroups=wh-alice" in argv and "PreemptMode=OFF" in argv
    (found,) = partial.parse_partitions(PARTITION_LINE)
    # the slot began: UP, and Slurm says UP already
    assert (
        partial.plan_partitions(
            partial.partitions([spec()], {"wh-alice": "wh-alice"}, T0, 3), [found]
        )
        == []
    )
    # opened to someone else by hand: put back; no booking: deleted; others untouched
    wrong = replace(found, allow_groups=("users",))
    (step,) = partial.plan_partitions(
        partial.partitions([spec()], {"wh-alice": "wh-alice"}, T0, 3), [wrong]
    )
    assert (
        step.kind == "update" and "AllowGroups users in Slurm, wh-alice in the ledger" in step.why
    )
    gpu = SlurmPartition("gpu", ("node3",), "UP", (), 1)
    assert [s.kind for s in partial.plan_partitions([], [found, gpu])] == ["delete"]


def test_intruders_are_others_gpu_jobs_on_the_node_newest_first() -> None:
    h = HoldSpec(7, "wh-alice", "node3", 1, T0, T0 + timedelta(hours=1))
    waiting = job(state="PENDING", reason="Resources")
    old = job(id="5", name="wrap", user="wh-bob", comment="", partition="gpu", start=T0)
    new = replace(old, id="6", start=T0 + timedelta(minutes=1))
    cpu = replace(old, id="8", gpus=0)
    alices = replace(old, id="9", user="wh-alice")
    booked_on = {"node3": {"wh-alice"}}
    found = partial.intruders([h], [waiting, old, new, cpu, alices], booked_on)
    assert [j.id for j in found] == ["6"]
    # the hold runs, or waits for its start: nobody is requeued
    assert partial.intruders([h], [job(), old], booked_on) == []
    assert partial.intruders([h], [job(state="PENDING", reason="BeginTime"), old], booked_on) == []


def test_jobs_beyond_the_booked_gpus_in_its_partition() -> None:
    mine = job(id="9", name="wrap", user="wh-alice", comment="", partition="werkhub-b7")
    two = replace(mine, id="10", gpus=2, start=T0 + timedelta(minutes=1))
    assert partial.beyond_booking([spec()], [mine]) == []  # one booked, one used
    assert [j.id for j in partial.beyond_booking([spec()], [mine, two])] == ["10"]
    elsewhere = replace(two, partition="gpu")  # outside the partition: ordinary work
    assert partial.beyond_booking([spec()], [mine, elsewhere]) == []


def test_slurm_holds_a_booking_from_shortly_before_its_start() -> None:
    s = spec(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2))
    assert partial.due([s], T0) == []  # an hour ahead: nothing in Slurm yet
    assert partial.due([s], s.start - partial.LEAD) == [s]
    assert partial.due([s], s.end) == []
    # the loop wakes up LEAD before the start, at the start and at the end
    assert partial.next_change([s], T0) == s.start - partial.LEAD
    assert partial.next_change([s], s.start - partial.LEAD) == s.start
    assert partial.next_change([s], s.start) == s.end
    assert partial.next_change([s], s.end) is None
