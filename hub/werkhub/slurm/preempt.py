"""Bookings of part of a node held by Slurm's preemption, applied through the client: the
booking partitions and hold jobs :mod:`werkhub.slurm.partial` plans, intruders requeued,
and whether the site's Slurm can reserve GPUs itself (GRES reservations).

Every step is one Slurm command, reported in the reconciliation's report (what was made,
changed, cancelled, requeued, and what Slurm refused, in Slurm's words).
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from werkhub.booking import ledger
from werkhub.errors import WerkhubError
from werkhub.slurm import commands, partial, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.partial import PartialSpec, SlurmJob, SlurmPartition
from werkhub.slurm.report import Change, Failure, Report

#: the site's hold partition when slurm.conf names none other (docs/slurm.md)
HOLD_PARTITION = "werkhub-hold"
#: the reservation werkhub tries at start-up to learn whether Slurm reserves GPUs
PROBE = "werkhub-probe"


def primary_group(user: str) -> str:
    """The name of OS ``user``'s primary group (the booking partition's AllowGroups)."""
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def jobs(client: SlurmClient) -> list[SlurmJob]:
    return partial.parse_jobs(client.run(commands.show_argv("job"), "list its jobs"))


def partitions(client: SlurmClient) -> list[SlurmPartition]:
    text = client.run(commands.show_argv("partition"), "list its partitions")
    return partial.parse_partitions(text)


def reconcile(
    client: SlurmClient,
    specs: Sequence[PartialSpec],
    report: Report,
    now: datetime,
    *,
    hold_partition: str = HOLD_PARTITION,
    group_of: Callable[[str], str] = primary_group,
    known_user: Callable[[str], bool] = users.exists,
) -> None:
    """Make Slurm hold the bookings of part of a node ``specs`` that are under way or
    start within :data:`werkhub.slurm.partial.LEAD`: their partitions, their hold jobs,
    intruders requeued; stale ones removed. Events go into ``report`` (a
    :class:`werkhub.slurm.reservations.Report`)."""

    def failed(action: str, name: str, booking_id: int | None, exc: WerkhubError) -> None:
        report.failed.append(Failure(action, name, booking_id, str(exc), exc.status))

    try:
        found = partitions(client)
    except WerkhubError as exc:
        failed("list", "", None, exc)
        return
    hold_part = next((p for p in found if p.name == hold_partition), None)
    usable: list[PartialSpec] = []
    groups: dict[str, str] = {}
    for spec in partial.due(specs, now):
        try:
            if hold_part is None:
                raise WerkhubError(
                    f"booking {spec.booking_id} holds part of a node, and the Slurm cluster "
                    f"has no partition '{hold_partition}' for hold jobs (slurm.conf needs it: "
                    "see docs/slurm.md, 'Bookings of part of a node')",
                    "slurm.hold_partition",
                )
            users.require(spec.hub_user, spec.user, known=known_user)
            groups[spec.user] = group_of(spec.user)
            usable.append(spec)
        except WerkhubError as exc:
            failed("hold", spec.name, spec.booking_id, exc)
        except KeyError:
            failed(
                "hold",
                spec.name,
                spec.booking_id,
                WerkhubError(f"OS user {spec.user} has no primary group"),
            )
    tier = (hold_part.priority_tier if hold_part else 1) + 1
    wanted_parts = partial.partitions(usable, groups, now, tier)
    for step in partial.plan_partitions(wanted_parts, found):
        try:
            if step.kind == "delete":
                client.run(
                    ["scancel", f"--partition={step.name}"], f"cancel the jobs of {step.name}"
                )
                client.run(
                    ["scontrol", "delete", f"PartitionName={step.name}"],
                    f"delete partition {step.name}",
                )
            elif step.kind == "update":
                client.run(
                    partial.partition_update_argv(step.name, step.settings),
                    f"change partition {step.name}",
                )
            else:
                client.run(
                    partial.partition_create_argv(step.name, step.settings, tier),
                    f"create partition {step.name}",
                )
            report.partitions.append(Change(step.kind, step.name, step.booking_id, step.why))
        except WerkhubError as exc:
            failed(step.kind, step.name, step.booking_id, exc)
    try:
        running = jobs(client)
    except WerkhubError as exc:
        failed("list", "", None, exc)
        return
    wanted_holds = partial.holds(usable, running, now)
    booked_on: dict[str, set[str]] = {}
    for spec in usable:
        if spec.start <= now:
            for node in spec.nodes:
                booked_on.setdefault(node, set()).add(spec.user)
    under_way = [h for h in wanted_holds if h.start <= now]
    for job in partial.intruders(under_way, running, booked_on):
        try:
            client.run(["scontrol", "requeue", job.id], f"requeue job {job.id}")
            report.preempted.append(
                Change(
                    "requeue",
                    f"job {job.id}",
                    None,
                    f"{job.user}'s job held {job.gpus} GPU of {','.join(job.nodes)}, booked by "
                    "someone else",
                )
            )
        except WerkhubError as exc:
            failed("requeue", f"job {job.id}", None, exc)
    for job in partial.beyond_booking([s for s in usable if s.start <= now], running):
        try:
            client.run(["scancel", job.id], f"cancel job {job.id}")
            report.preempted.append(
                Change(
                    "cancel",
                    f"job {job.id}",
                    commands.booking_of(job.partition),
                    f"{job.user}'s job ran with {job.gpus} GPU in {job.partition}, beyond the "
                    "GPUs the booking holds",
                )
            )
        except WerkhubError as exc:
            failed("cancel", f"job {job.id}", None, exc)
    for action in partial.plan_holds(wanted_holds, running, now):
        try:
            if action.kind == "cancel":
                client.run(["scancel", action.job_id], f"cancel hold job {action.job_id}")
                report.holds.append(Change("delete", action.name, action.booking_id, action.why))
            elif action.kind == "extend":
                assert action.spec is not None
                client.run(
                    [
                        "scontrol",
                        "update",
                        f"JobId={action.job_id}",
                        f"TimeLimit={action.minutes}",
                        f"Comment={action.spec.comment}",
                    ],
                    f"change hold job {action.job_id}",
                )
                report.holds.append(Change("update", action.name, action.booking_id, action.why))
            else:
                assert action.spec is not None
                client.submit(partial.hold_argv(action.spec, hold_partition, now))
                report.holds.append(Change("create", action.name, action.booking_id, action.why))
        except WerkhubError as exc:
            failed(action.kind, action.name, action.booking_id, exc)


def gres_reservations(client: SlurmClient, node: str) -> tuple[bool, str]:
    """Whether the site's Slurm reserves a GPU count inside a node, tried (never assumed):
    a reservation of one GPU of ``node`` a year ahead, deleted at once when made. Slurm
    22.05 refuses (``TRES type 'gres/gpu' not supported with reservations``, or without
    slurmdbd ``couldn't identify configured TRES 'gres/gpu'``); the answer says why."""
    start = commands.format_time(ledger.utcnow() + timedelta(days=365))
    argv = [
        "scontrol",
        "create",
        "reservation",
        f"ReservationName={PROBE}",
        f"StartTime={start}",
        "Duration=1",
        "Users=root",
        f"Nodes={node}",
        "TRES=gres/gpu=1",
    ]
    try:
        client.run(argv, f"reserve one GPU of {node}")
    except WerkhubError as exc:
        return False, getattr(exc, "reason", "") or str(exc)
    client.delete_reservation(PROBE)
    return True, "Slurm accepted a reservation of one GPU inside a node"
