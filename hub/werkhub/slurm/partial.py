"""Bookings of part of a node, held by Slurm's preemption (pure: what should exist, and
the steps from what does).

Slurm 22.05 reserves whole nodes, never a GPU count inside a node. A booking of ``n`` of a
node's GPUs is held instead by two things Slurm itself enforces (docs/slurm.md, "Bookings
of part of a node"):

* **a hold job** ``werkhub-h<id>-<node>``: a job of root in the site's hold partition
  (``RootOnly=YES``, a higher ``PriorityTier`` than the partitions of ordinary work, under
  ``PreemptType=preempt/partition_prio``) asking for ``--gres=gpu:<n>`` on the node, with
  ``--begin`` at the slot's start and a time limit to its end. At the slot's start Slurm
  starts it and requeues (preempts) other work on those GPUs; while it runs, nobody else
  gets them;
* **the booking's partition** ``werkhub-b<id>``: the booked nodes, open only to the booked
  OS user's primary group (``AllowGroups``), one tier above the hold partition, never
  preempted, ``State=DOWN`` before the slot (jobs queue, none starts) and ``UP`` during it.
  The booked user's job there preempts the hold (``PreemptMode=CANCEL``) and gets the GPUs
  at once.

Each round the hold asks for the booked GPUs minus those the booked user's own jobs already
run with on that node, so a running server or job of the booked user replaces the hold, and
the hold comes back when it ends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from werkhub.slurm import commands

#: hold jobs, and only those, are named so
HOLD_PREFIX = "werkhub-h"
_HOLD_NAME = re.compile(rf"^{HOLD_PREFIX}(\d+)-(\S+)$")
#: job states in which a job holds (or is about to hold) its resources
LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"})
#: the command a hold job runs: it sleeps; its time limit ends it
HOLD_COMMAND = "exec sleep 2147483647"


def hold_name(booking_id: int, node: str) -> str:
    return f"{HOLD_PREFIX}{booking_id}-{node}"


def hold_of(name: str) -> tuple[int, str] | None:
    """(booking id, node) of a hold job's name, else None."""
    found = _HOLD_NAME.match(name)
    return (int(found.group(1)), found.group(2)) if found else None


def partition_name(booking_id: int) -> str:
    """The partition of a booking of part of a node (the reservation's name, for the
    booked user's jobs: ``sbatch --partition=werkhub-b<id>``)."""
    return commands.reservation_name(booking_id)


@dataclass(frozen=True)
class PartialSpec:
    """A booking of part of a node: ``gpus`` of each node in [start, end) for ``user``."""

    booking_id: int
    hub_user: str
    user: str
    gpus: tuple[tuple[str, int], ...]
    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        return partition_name(self.booking_id)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(node for node, _ in self.gpus)


# -- what Slurm shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJob:
    """A job as ``scontrol -o show job`` describes it, with what holds need."""

    id: str
    name: str
    user: str
    state: str
    reason: str
    partition: str
    nodes: tuple[str, ...]
    gpus: int
    start: datetime | None
    end: datetime | None
    comment: str
    reservation: str

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def hold(self) -> tuple[int, str] | None:
        return hold_of(self.name)


def gpu_count(tres_per_node: str) -> int:
    """GPUs per node of ``TresPerNode=gres:gpu:a100:2`` (``gres:gpu:1``, ``gres/gpu=1``)."""
    total = 0
    for part in commands.split_top(commands.null(tres_per_node)):
        fields = re.split(r"[:/=]", part)
        if "gpu" not in fields:
            continue
        last = fields[-1]
        total += int(last) if last.isdigit() else 1
    return total


def parse_jobs(text: str) -> list[SlurmJob]:
    return [
        SlurmJob(
            id=r["JobId"],
            name=commands.null(r.get("JobName", "")),
            user=r.get("UserId", "").split("(")[0],
            state=r.get("JobState", ""),
            reason=commands.null(r.get("Reason", "")),
            partition=commands.null(r.get("Partition", "")),
            nodes=tuple(commands.expand_hostlist(r.get("NodeList", ""))),
            gpus=gpu_count(r.get("TresPerNode", "")),
            start=commands.parse_time(r.get("StartTime")),
            end=commands.parse_time(r.get("EndTime")),
            comment=commands.null(r.get("Comment", "")),
            reservation=commands.null(r.get("Reservation", "")),
        )
        for r in commands.parse_records(text)
        if "JobId" in r
    ]


@dataclass(frozen=True)
class SlurmPartition:
    name: str
    nodes: tuple[str, ...]
    state: str
    allow_groups: tuple[str, ...]
    priority_tier: int

    @property
    def managed(self) -> bool:
        return commands.booking_of(self.name) is not None


def parse_partitions(text: str) -> list[SlurmPartition]:
    out = []
    for r in commands.parse_records(text):
        if "PartitionName" not in r:
            continue
        tier = r.get("PriorityTier", "1")
        out.append(
            SlurmPartition(
                name=r["PartitionName"],
                nodes=tuple(commands.expand_hostlist(r.get("Nodes", ""))),
                state=r.get("State", ""),
                allow_groups=tuple(commands.split_top(commands.null(r.get("AllowGroups", "")))),
                priority_tier=int(tier) if tier.isdigit() else 1,
            )
        )
    return out


# -- what should be ------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldSpec:
    booking_id: int
    user: str
    node: str
    gpus: int
    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        return hold_name(self.booking_id, self.node)

    @property
    def comment(self) -> str:
        """What the hold is, in the job's comment: a hold whose comment differs is stale."""
        return (
            f"werkhub hold of booking {self.booking_id} for {self.user}: {self.gpus} GPU "
            f"on {self.node} from {commands.format_time(self.start)} "
            f"to {commands.format_time(self.end)}"
        )


def own_gpus(spec: PartialSpec, node: str, jobs: Iterable[SlurmJob]) -> int:
    """GPUs the booked user's own running jobs (not holds) use on ``node`` now."""
    return sum(
        j.gpus
        for j in jobs
        if j.state == "RUNNING" and j.user == spec.user and node in j.nodes and j.hold is None
    )


def holds(specs: Iterable[PartialSpec], jobs: Sequence[SlurmJob], now: datetime) -> list[HoldSpec]:
    """The hold jobs ``specs`` call for at ``now``: per node the booked GPUs, less those the
    booked user's own jobs run with there once the slot is under way."""
    out = []
    for spec in specs:
        if spec.end <= now:
            continue
        for node, count in spec.gpus:
            used = own_gpus(spec, node, jobs) if spec.start <= now else 0
            if count - used > 0:
                out.append(
                    HoldSpec(spec.booking_id, spec.user, node, count - used, spec.start, spec.end)
                )
    return out


def minutes_between(start: datetime, end: datetime) -> int:
    """Slurm's time limit (whole minutes, at least one) from ``start`` to ``end``."""
    return max(1, math.ceil((end - start).total_seconds() / 60))


def hold_argv(spec: HoldSpec, partition: str, now: datetime) -> list[str]:
    """``sbatch`` of the hold job of ``spec`` in the hold ``partition``: root's job (the
    partition is RootOnly), one CPU and little memory, starting at the slot's start."""
    begin = max(spec.start, now)
    return [
        "sbatch",
        "--parsable",
        "--uid=root",
        "--gid=root",
        "--chdir=/",
        "--output=/dev/null",
        f"--job-name={spec.name}",
        f"--partition={partition}",
        f"--nodelist={spec.node}",
        f"--gres=gpu:{spec.gpus}",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem=16M",
        "--no-requeue",
        f"--comment={spec.comment}",
        f"--time={minutes_between(begin, spec.end)}",
        *([f"--begin={commands.format_time(spec.start)}"] if spec.start > now else []),
        f"--wrap={HOLD_COMMAND}",
    ]


HoldKind = Literal["submit", "extend", "cancel"]


@dataclass(frozen=True)
class HoldAction:
    kind: HoldKind
    name: str
    booking_id: int
    why: str
    spec: HoldSpec | None = None
    job_id: str = ""
    minutes: int = 0


def plan_holds(
    wanted: Iterable[HoldSpec], jobs: Iterable[SlurmJob], now: datetime
) -> list[HoldAction]:
    """Cancels first (they free GPUs), then time-limit changes of running holds whose
    booking's end moved, then submits."""
    live: dict[str, list[SlurmJob]] = {}
    for job in jobs:
        if job.live and job.hold is not None:
            live.setdefault(job.name, []).append(job)
    want = {h.name: h for h in wanted}
    cancels, extends, submits = [], [], []
    for name, found in sorted(live.items()):
        booking_id = found[0].hold[0] if found[0].hold else 0
        spec = want.get(name)
        keep = None
        for job in found:
            if spec is not None and keep is None and job.comment == spec.comment:
                keep = job
        for job in found:
            if job is keep:
                continue
            movable = spec is not None and job.state == "RUNNING"
            if movable and keep is None and spec and _same_but_end(job.comment, spec):
                keep = job
                minutes = minutes_between(job.start or now, spec.end)
                why = f"the booking's end moved to {commands.format_time(spec.end)}"
                extends.append(HoldAction("extend", name, booking_id, why, spec, job.id, minutes))
                continue
            why = (
                "no booked or active booking needs it"
                if spec is None
                else f"it no longer matches the booking ({job.comment or 'no comment'})"
            )
            cancels.append(HoldAction("cancel", name, booking_id, why, spec, job.id))
        if spec is not None and keep is None:
            why = f"{spec.gpus} GPU of {spec.node} for {spec.user} (made anew)"
            submits.append(HoldAction("submit", name, spec.booking_id, why, spec))
    for name, spec in sorted(want.items()):
        if name not in live:
            why = f"{spec.gpus} GPU of {spec.node} for {spec.user}"
            submits.append(HoldAction("submit", name, spec.booking_id, why, spec))
    return [*cancels, *extends, *submits]


def _same_but_end(comment: str, spec: HoldSpec) -> bool:
    head = spec.comment.rsplit(" to ", 1)[0]
    return comment.startswith(head + " to ")


# -- the booking's partition ------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionWanted:
    name: str
    booking_id: int
    nodes: tuple[str, ...]
    group: str
    up: bool
    tier: int

    def settings(self) -> dict[str, str]:
        return {
            "Nodes": ",".join(self.nodes),
            "AllowGroups": self.group,
            "State": "UP" if self.up else "DOWN",
        }


def partitions(
    specs: Iterable[PartialSpec], group_of: Mapping[str, str], now: datetime, tier: int
) -> list[PartitionWanted]:
    """The booking partitions ``specs`` call for; ``group_of``: OS user -> primary group."""
    return [
        PartitionWanted(
            s.name, s.booking_id, tuple(sorted(s.nodes)), group_of[s.user], s.start <= now, tier
        )
        for s in specs
        if s.end > now and s.user in group_of
    ]


PartitionKind = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class PartitionAction:
    kind: PartitionKind
    name: str
    booking_id: int | None
    why: str
    settings: tuple[tuple[str, str], ...] = ()


def plan_partitions(
    wanted: Iterable[PartitionWanted], actual: Iterable[SlurmPartition]
) -> list[PartitionAction]:
    mine = {p.name: p for p in actual if p.managed}
    want = {p.name: p for p in wanted}
    out = [
        PartitionAction("delete", name, commands.booking_of(name), "no booking needs it")
        for name in sorted(set(mine) - set(want))
    ]
    for name, w in sorted(want.items()):
        found = mine.get(name)
        if found is None:
            out.append(
                PartitionAction(
                    "create", name, w.booking_id, "missing in Slurm", tuple(w.settings().items())
                )
            )
            continue
        have = {
            "Nodes": ",".join(sorted(found.nodes)),
            "AllowGroups": ",".join(found.allow_groups),
            "State": "UP" if found.state == "UP" else "DOWN",
        }
        diffs = [(k, v) for k, v in w.settings().items() if have[k] != v]
        if diffs:
            why = "; ".join(
                f"{k} {have[k] or 'none'} in Slurm, {v} in the ledger" for k, v in diffs
            )
            out.append(PartitionAction("update", name, w.booking_id, why, tuple(diffs)))
    return out


def partition_create_argv(name: str, settings: Iterable[tuple[str, str]], tier: int) -> list[str]:
    return [
        "scontrol",
        "create",
        f"PartitionName={name}",
        *(f"{k}={v}" for k, v in settings),
        f"PriorityTier={tier}",
        "PreemptMode=OFF",
        "MaxTime=INFINITE",
    ]


def partition_update_argv(name: str, settings: Iterable[tuple[str, str]]) -> list[str]:
    return ["scontrol", "update", f"PartitionName={name}", *(f"{k}={v}" for k, v in settings)]


# -- intruders -----------------------------------------------------------------------------


def intruders(
    wanted: Iterable[HoldSpec], jobs: Sequence[SlurmJob], users_of: Mapping[str, set[str]]
) -> list[SlurmJob]:
    """Running GPU jobs that keep a hold under way from starting: on the hold's node, of
    users without a booking there, outside werkhub's partitions and reservations (Slurm did
    not preempt them: their partition is not preemptable, for example); newest first,
    as many as the waiting holds need GPUs."""
    out: list[SlurmJob] = []
    for spec in wanted:
        waiting = [
            j
            for j in jobs
            if j.name == spec.name and j.state == "PENDING" and j.reason not in ("BeginTime",)
        ]
        if not waiting:
            continue
        need = spec.gpus
        candidates = sorted(
            (
                j
                for j in jobs
                if j.state == "RUNNING"
                and spec.node in j.nodes
                and j.gpus > 0
                and j.hold is None
                and j.user not in users_of.get(spec.node, set())
                and commands.booking_of(j.partition) is None
                and not j.reservation.startswith(commands.MANAGED_PREFIX)
                and j not in out
            ),
            key=lambda j: (
                j.start or datetime.min.replace(tzinfo=UTC),
                int(j.id) if j.id.isdigit() else 0,
            ),
            reverse=True,
        )
        for job in candidates:
            if need <= 0:
                break
            out.append(job)
            need -= job.gpus
    return out


def beyond_booking(specs: Iterable[PartialSpec], jobs: Sequence[SlurmJob]) -> list[SlurmJob]:
    """Jobs in a booking's own partition that run with more GPUs on a node than the
    booking holds there (the booked user asked Slurm for more): newest first, as many as
    bring the booking back to its GPUs."""
    out: list[SlurmJob] = []
    for spec in specs:
        for node, count in spec.gpus:
            mine = sorted(
                (
                    j
                    for j in jobs
                    if j.state == "RUNNING" and j.partition == spec.name and node in j.nodes
                ),
                key=lambda j: (
                    j.start or datetime.min.replace(tzinfo=UTC),
                    int(j.id) if j.id.isdigit() else 0,
                ),
                reverse=True,
            )
            excess = sum(j.gpus for j in mine) - count
            for job in mine:
                if excess <= 0:
                    break
                out.append(job)
                excess -= job.gpus
    return out


#: how long before its slot a booking of part of a node gets its partition (DOWN) and its
#: hold job (pending until ``--begin``): Slurm then starts the hold at the start itself,
#: and bookings further ahead cost Slurm nothing yet
LEAD = timedelta(minutes=10)


def due(specs: Iterable[PartialSpec], now: datetime) -> list[PartialSpec]:
    """The bookings Slurm should hold now: under way, or starting within :data:`LEAD`."""
    return [s for s in specs if s.start - now <= LEAD and s.end > now]


def next_change(specs: Iterable[PartialSpec], now: datetime) -> datetime | None:
    """The next moment after ``now`` a booking of part of a node needs a round: :data:`LEAD`
    before its start (partition and hold made), its start (the partition opens), its end."""
    moments = [m for s in specs for m in (s.start - LEAD, s.start, s.end) if m > now]
    return min(moments) if moments else None
