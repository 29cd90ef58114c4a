"""Bookings held by Slurm: the ledger says what should be reserved, this module makes the
cluster's ``werkhub-*`` reservations say the same.

* :func:`desired` (pure): one reservation per booking in state booked/active that holds
  whole Slurm nodes; a booking of part of a node (Slurm 22.05 reserves whole nodes, not
  GPUs) becomes a :class:`werkhub.slurm.partial.PartialSpec`, held by its own partition and
  a hold job that preempts other work (:mod:`werkhub.slurm.preempt`);
* :func:`plan` (pure): the creates, updates and deletes that turn Slurm's reservations into
  the desired ones; reservations not named ``werkhub-*`` are never touched;
* :func:`reconcile`: applies a plan, one Slurm command per action (each all or nothing),
  then the partitions, hold jobs and requeued intruders of bookings of part of a node, and
  reports what it changed and what Slurm refused, in Slurm's words;
* :func:`hold` and :func:`drop`: one booking's reservation, for the moment it is booked,
  changed or ended (errors raised, so the person sees them).

The ledger is the source of truth: drift in Slurm (a reservation deleted or changed by hand)
is repaired in the ledger's favour.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from werkhub.booking import ledger
from werkhub.config.schema import GpuNode, GpusSection
from werkhub.errors import WerkhubError
from werkhub.gpus.inventory import build_units
from werkhub.slurm import commands, preempt, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.commands import Reservation, ReservationSpec
from werkhub.slurm.inventory import SlurmInventory
from werkhub.slurm.partial import PartialSpec
from werkhub.slurm.report import Change, Failure, Report, Skipped

__all__ = ["Change", "Desired", "Failure", "Report", "Skipped", "desired", "plan", "reconcile"]

#: booking states whose devices Slurm holds
HOLDING = frozenset(s.value for s in ledger.HOLDING)
#: starts this close count as the same (the ledger keeps minutes, Slurm seconds)
START_SLACK = timedelta(seconds=60)


@dataclass(frozen=True)
class Desired:
    """What Slurm should hold: reservations of whole nodes (name -> spec), bookings of part
    of a node (held by a booking partition and hold jobs, :mod:`werkhub.slurm.partial`),
    and the bookings it cannot hold."""

    specs: dict[str, ReservationSpec]
    skipped: tuple[Skipped, ...] = ()
    partials: tuple[PartialSpec, ...] = ()


def _moment(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def node_units(inventory: SlurmInventory | Sequence[GpuNode]) -> dict[str, frozenset[str]]:
    """Node -> the ledger's unit ids of its GPUs."""
    nodes = inventory.nodes if isinstance(inventory, SlurmInventory) else inventory
    found: dict[str, set[str]] = defaultdict(set)
    for unit in build_units(GpusSection(nodes=list(nodes))):
        found[unit.node].add(unit.id)
    return {node: frozenset(ids) for node, ids in found.items()}


def desired(
    bookings: Iterable[Mapping[str, Any]],
    inventory: SlurmInventory | Sequence[GpuNode],
    user_map: Callable[[str], str],
    now: datetime,
    partition: str = "",
) -> Desired:
    """The reservations the ledger's ``bookings`` (the API's view: ``id, user, start, end,
    state, devices``) call for at ``now``; ``user_map`` gives a hub user's OS user."""
    units = node_units(inventory)
    specs: dict[str, ReservationSpec] = {}
    skipped: list[Skipped] = []
    partials: list[PartialSpec] = []
    for booking in bookings:
        if booking["state"] not in HOLDING:
            continue
        booking_id, user = int(booking["id"]), str(booking["user"])
        start, end = _moment(booking["start"]), _moment(booking["end"])
        if end <= now:
            continue

        def skip(reason: str, booking_id: int = booking_id, user: str = user) -> None:
            skipped.append(Skipped(booking_id, user, reason))

        devices = list(booking.get("devices") or [])
        if not devices:
            skip("it holds no GPUs yet")
            continue
        held: dict[str, set[str]] = defaultdict(set)
        foreign = []
        for unit in devices:
            node = unit.split("/", 1)[0]
            if unit in units.get(node, ()):
                held[node].add(unit)
            else:
                foreign.append(unit)
        if foreign:
            skip(f"{', '.join(foreign)}: not GPUs of the Slurm partition")
            continue
        try:
            os_user = user_map(user)
        except WerkhubError as exc:
            skip(str(exc))
            continue
        if any(ids != units[n] for n, ids in held.items()):
            gpus = tuple((n, len(ids)) for n, ids in sorted(held.items()))
            partials.append(PartialSpec(booking_id, user, os_user, gpus, start, end))
            continue
        name = commands.reservation_name(booking_id)
        specs[name] = ReservationSpec(
            name=name,
            booking_id=booking_id,
            hub_user=user,
            user=os_user,
            nodes=tuple(sorted(held)),
            start=start,
            end=end,
            partition=partition,
        )
    return Desired(specs, tuple(skipped), tuple(partials))


Kind = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class Action:
    kind: Kind
    name: str
    booking_id: int | None
    why: str
    spec: ReservationSpec | None = None
    changes: tuple[tuple[str, str], ...] = ()


def _same_start(actual: datetime | None, wanted: datetime, now: datetime) -> bool:
    if actual is None:
        return False
    if abs(actual - wanted) < START_SLACK:
        return True
    return actual <= now + START_SLACK and wanted <= now + START_SLACK  # both under way


def _stamp(moment: datetime | None) -> str:
    return commands.format_time(moment) if moment else "none"


def differences(
    actual: Reservation, spec: ReservationSpec, now: datetime
) -> list[tuple[str, str, str]]:
    """(Slurm key, new value, what differs) for each way ``actual`` is not ``spec``."""
    found = []

    def differ(key: str, value: str, what: str, slurm: str, ours: str) -> None:
        found.append((key, value, f"{what} {slurm or 'none'} in Slurm, {ours} in the ledger"))

    if not _same_start(actual.start, spec.start, now):
        start = "now" if spec.start <= now else commands.format_time(spec.start)
        differ("StartTime", start, "start", _stamp(actual.start), _stamp(spec.start))
    if actual.end != spec.end:
        end = commands.format_time(spec.end)
        differ("EndTime", end, "end", _stamp(actual.end), end)
    if set(actual.nodes) != set(spec.nodes):
        nodes = ",".join(spec.nodes)
        differ("Nodes", nodes, "nodes", ",".join(actual.nodes), nodes)
    if set(actual.users) != {spec.user}:
        differ("Users", spec.user, "users", ",".join(actual.users), spec.user)
    if spec.partition and actual.partition != spec.partition:
        differ("PartitionName", spec.partition, "partition", actual.partition, spec.partition)
    return found


def plan(
    wanted: Mapping[str, ReservationSpec], actual: Iterable[Reservation], now: datetime
) -> list[Action]:
    """The actions that make Slurm's ``werkhub-*`` reservations ``wanted``: deletes first
    (they free nodes), then updates, then creates."""
    mine = {r.name: r for r in actual if r.managed}
    deletes, updates, creates = [], [], []
    for name in sorted(set(mine) - set(wanted)):
        deletes.append(
            Action(
                "delete", name, commands.booking_of(name), "no booked or active booking needs it"
            )
        )
    for name, spec in sorted(wanted.items()):
        found = mine.get(name)
        if found is None:
            creates.append(Action("create", name, spec.booking_id, "missing in Slurm", spec))
            continue
        diffs = differences(found, spec, now)
        if not diffs:
            continue
        why = "; ".join(d[2] for d in diffs)
        started = found.start is not None and found.start <= now
        if started and any(d[0] == "StartTime" for d in diffs):
            # Slurm refuses to move the start of a reservation under way: made anew
            deletes.append(Action("delete", name, spec.booking_id, why))
            creates.append(Action("create", name, spec.booking_id, why, spec))
            continue
        changes = tuple((key, value) for key, value, _ in diffs)
        updates.append(Action("update", name, spec.booking_id, why, spec, changes))
    return [*deletes, *updates, *creates]


def reconcile(
    client: SlurmClient,
    wanted: Desired,
    now: datetime | None = None,
    *,
    known_user: Callable[[str], bool] = users.exists,
    hold_partition: str = preempt.HOLD_PARTITION,
    group_of: Callable[[str], str] = preempt.primary_group,
) -> Report:
    """Make Slurm hold what ``wanted`` says; a report of every change and refusal. A
    refused action leaves its reservation as it was (Slurm applies a command whole).
    Bookings of part of a node: see :func:`werkhub.slurm.preempt.reconcile`."""
    now = now or ledger.utcnow()
    report = Report(at=now, skipped=list(wanted.skipped))
    try:
        actual = client.reservations()
    except WerkhubError as exc:
        report.failed.append(Failure("list", "", None, str(exc), exc.status))
        return report
    failed_names: set[str] = set()
    for action in plan(wanted.specs, actual, now):
        try:
            if action.kind == "delete":
                client.delete_reservation(action.name)
                report.deleted.append(Change("delete", action.name, action.booking_id, action.why))
                continue
            assert action.spec is not None
            users.require(action.spec.hub_user, action.spec.user, known=known_user)
            if action.kind == "update":
                client.update_reservation(action.name, dict(action.changes))
                report.updated.append(Change("update", action.name, action.booking_id, action.why))
            elif action.name not in failed_names:
                client.create_reservation(action.spec, ledger.utcnow())
                report.created.append(Change("create", action.name, action.booking_id, action.why))
        except WerkhubError as exc:
            failed_names.add(action.name)
            report.failed.append(
                Failure(action.kind, action.name, action.booking_id, str(exc), exc.status)
            )
    preempt.reconcile(
        client,
        wanted.partials,
        report,
        now,
        hold_partition=hold_partition,
        group_of=group_of,
        known_user=known_user,
    )
    return report


def hold(
    client: SlurmClient,
    spec: ReservationSpec,
    now: datetime | None = None,
    *,
    known_user: Callable[[str], bool] = users.exists,
) -> None:
    """Create or bring up to date the reservation of one booking, now; raises the
    :class:`werkhub.slurm.errors.SlurmError` Slurm's refusal is (nothing is left made)."""
    now = now or ledger.utcnow()
    users.require(spec.hub_user, spec.user, known=known_user)
    found = client.reservation(spec.name)
    for action in plan({spec.name: spec}, [found] if found else [], now):
        if action.kind == "delete":
            client.delete_reservation(action.name)
        elif action.kind == "update":
            client.update_reservation(action.name, dict(action.changes))
        else:
            client.create_reservation(spec, ledger.utcnow())


def drop(client: SlurmClient, booking_id: int) -> None:
    """Remove the reservation of a booking that ended, was cancelled, released or not
    used (gone already is fine)."""
    client.delete_reservation(commands.reservation_name(booking_id))
