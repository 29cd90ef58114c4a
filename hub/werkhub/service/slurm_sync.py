"""Slurm as the GPU backend of the running service (``slurm.enabled``, docs/slurm.md).

* :func:`connect` (start-up): the GPU nodes of the cluster's partition become the
  configuration's ``gpus`` section, so the ledger books ``<slurm node>/<index>``;
* :class:`SlurmSync`: makes Slurm's ``werkhub-*`` reservations match the ledger's booked and
  active bookings at start-up, every ``slurm.reconcile_seconds`` and soon after each booking
  written through the API (:func:`kick`); keeps the last report and the nodes' states;
* :func:`hold_created`: a new booking of whole nodes is held by Slurm before it is
  answered; when Slurm refuses it, the booking is withdrawn and the person reads Slurm's
  reason;
* ``GET /api/slurm/status`` (administrators): the last reconciliation, as the admin page
  shows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request

from werkhub.booking import ledger, reads, rows
from werkhub.booking.ledger import HOLDING, LedgerError, Slot
from werkhub.booking.manager import BookingManager, Caller
from werkhub.booking.tables import bookings
from werkhub.config.schema import SlurmSection, WerkhubConfig
from werkhub.errors import WerkhubError
from werkhub.gpus.inventory import build_units
from werkhub.service.identity import CurrentUser
from werkhub.service.slurm_usage import SlurmUsage
from werkhub.slurm import commands, partial, preempt, reservations, setup, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.commands import ReservationSpec
from werkhub.slurm.errors import SlurmConflict
from werkhub.slurm.inventory import SlurmInventory
from werkhub.slurm.reservations import Report

log = logging.getLogger("werkhub.service.slurm")
#: the actor the audit trail names when a booking Slurm refused is withdrawn
ACTOR = "slurm"
#: how long a booking request waits for an unreachable controller before it is answered
#: without Slurm (the reconciliation loop holds the booking once Slurm is back)
REQUEST_RETRY_SECONDS = 5.0
#: changes and refusals kept across rounds for the admin page (newest first)
RECENT = 50


class NotHeld(WerkhubError):
    """Slurm refused to hold a new booking, which was therefore withdrawn."""

    def __init__(self, cause: WerkhubError, booking_id: int) -> None:
        super().__init__(f"{cause}; booking {booking_id} was withdrawn", cause.field)
        self.status = cause.status


# -- pure ----------------------------------------------------------------------------------


def as_booking(slot: Slot) -> dict[str, Any]:
    """A ledger slot in the form :func:`reservations.desired` reads (the API's view)."""
    return {
        "id": slot.id,
        "user": slot.user,
        "gpu_type": slot.gpu_type,
        "count": slot.count,
        "start": slot.start,
        "end": slot.end,
        "state": str(slot.state),
        "devices": list(slot.devices),
    }


def whole_node_spec(
    booking: Mapping[str, Any], stock: SlurmInventory, now: datetime
) -> ReservationSpec | None:
    """The reservation of ``booking`` when it holds whole nodes, else None (part of a node,
    no GPUs, over); its ``user`` is still the hub user, to be mapped by the caller."""
    wanted = reservations.desired([booking], stock, lambda name: name, now, stock.partition)
    return next(iter(wanted.specs.values()), None)


def unit_changes(booked: Iterable[str], stock: SlurmInventory) -> list[str]:
    """How the cluster's GPUs differ from the units the ledger books (read at start-up)."""
    now = {u.id for u in build_units(stock.section())}
    before = set(booked)
    out = [f"{unit} is new in Slurm (werkhub books it after a restart)" for unit in now - before]
    out += [f"{unit} is gone from Slurm" for unit in before - now]
    return sorted(out)


# -- the loop ------------------------------------------------------------------------------


class SlurmSync:
    """The cluster of ``slurm.*``, its inventory, and the reconciliation loop."""

    def __init__(self, section: SlurmSection, stock: SlurmInventory, client: SlurmClient) -> None:
        self.section = section
        self.client = client
        #: for booking requests: a person waits, so an unreachable controller is not
        #: waited out for long
        self.quick = setup.client(
            section, retry_seconds=min(section.retry_seconds, REQUEST_RETRY_SECONDS)
        )
        self.booked = tuple(u.id for u in build_units(stock.section()))
        self.inventory = stock
        self.inventory_error = ""
        self.report: Report | None = None
        #: (time, sentence) of the changes and refusals of recent rounds
        self.recent: deque[tuple[str, str]] = deque(maxlen=RECENT)
        self.error = ""
        self.rounds = 0
        self.manager: BookingManager | None = None
        #: whether the site's Slurm reserves GPUs inside a node (tried at the first round)
        self.gres_reservations: dict[str, Any] | None = None
        #: when the next booking of part of a node starts or ends (the loop wakes up then)
        self.next_change: datetime | None = None
        #: Slurm's accounting merged into the ledger's usage, each round
        self.usage = SlurmUsage(section, client)
        self._kicked: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # blocking parts, run in threads

    def holding(self) -> list[dict[str, Any]]:
        """The ledger's booked and active bookings that have not ended."""
        assert self.manager is not None
        with self.manager.read() as conn:
            found = reads.slots(
                conn,
                bookings.c.state.in_([s.value for s in HOLDING]),
                bookings.c.end_min > rows.to_min(ledger.utcnow()),
            )
        return [as_booking(s) for s in found]

    def wanted(self) -> reservations.Desired:
        """What Slurm should hold for the ledger's bookings, as the ledger is now."""
        return reservations.desired(
            self.holding(),
            self.inventory,
            users.mapper(self.section.user_mapping),
            ledger.utcnow(),
            partition=self.inventory.partition,
        )

    def reconcile_once(self) -> Report:
        """Read the nodes' states, then make Slurm hold what the ledger says; the report."""
        try:
            self.inventory = setup.read_inventory(self.section, self.client)
            self.inventory_error = ""
        except WerkhubError as exc:  # the last inventory serves; reconcile reports Slurm
            self.inventory_error = str(exc)
        if self.section.create_users:
            early = self.wanted()
            for spec in [*early.specs.values(), *early.partials]:
                with suppress(WerkhubError):  # reconcile reports the missing account
                    users.ensure(spec.hub_user, self.section.user_mapping, create=True)
        if self.gres_reservations is None and self.inventory.nodes:
            self.probe(self.inventory.nodes[0].name)
        # the ledger as it is right before Slurm is changed: a booking that ended while
        # accounts were made or GRES was tried must not get its reservation back
        wanted = self.wanted()
        report = reservations.reconcile(
            self.client, wanted, hold_partition=self.section.hold_partition
        )
        self.next_change = partial.next_change(wanted.partials, report.at)
        assert self.manager is not None
        self.usage.round(self.manager)
        self.report, self.error = report, ""
        self.rounds += 1
        events = report.lines()[: len(report.repaired) + len(report.failed)]
        for line in events:
            (log.warning if line.startswith("could not") else log.info)("slurm: %s", line)
        for line in reversed(events):  # newest round first, each in its own order
            self.recent.appendleft((report.at.isoformat(), line))
        return report

    def probe(self, node: str) -> None:
        """Try once whether Slurm reserves a GPU count inside a node (22.05 does not);
        the answer is shown in the status. Bookings of part of a node are held by a
        partition and a hold job either way (docs/slurm.md)."""
        try:
            supported, detail = preempt.gres_reservations(self.client, node)
        except WerkhubError as exc:  # unreachable: tried again next round
            log.warning("slurm: could not try GRES reservations: %s", exc)
            return
        self.gres_reservations = {"supported": supported, "detail": detail}
        log.info("slurm: GRES reservations %s: %s", "work" if supported else "refused", detail)

    def pause(self) -> float:
        """Seconds until the next round: reconcile_seconds, or sooner when a booking of
        part of a node starts or ends before (its partition opens, its hold ends)."""
        wait = self.section.reconcile_seconds
        if self.next_change is not None:
            ahead = (self.next_change - ledger.utcnow()).total_seconds() + 0.5
            wait = max(0.5, min(wait, ahead))
        return wait

    def hold(self, booking: Mapping[str, Any]) -> ReservationSpec | None:
        """Hold a new booking of whole nodes now (the OS user made first where
        ``create_users``); Slurm's refusal is raised. None for a booking Slurm does not
        hold (part of a node)."""
        spec = whole_node_spec(booking, self.inventory, ledger.utcnow())
        if spec is None:
            return None
        os_user = users.ensure(
            spec.hub_user, self.section.user_mapping, create=self.section.create_users
        )
        spec = spec.model_copy(update={"user": os_user})
        try:
            reservations.hold(self.quick, spec)
        except SlurmConflict:
            # a round that read the ledger before a booking ended may have made that
            # booking's reservation again after its end; such a leftover is werkhub's own
            # and must not turn a new booking away: a round now removes it, then once more
            if not self.stale_reservations():
                raise
            log.info("slurm: booking %s overlaps an ended booking's reservation", booking["id"])
            self.reconcile_once()
            reservations.hold(self.quick, spec)
        return spec

    def stale_reservations(self) -> list[str]:
        """werkhub's reservations of bookings the ledger no longer holds."""
        held = {int(b["id"]) for b in self.holding()}
        found = [(r.name, commands.booking_of(r.name)) for r in self.quick.reservations()]
        return [name for name, booking in found if booking is not None and booking not in held]

    # the task

    def start(self, manager: BookingManager) -> None:
        self.manager = manager
        self._kicked = asyncio.Event()
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def kick(self) -> None:
        """Reconcile soon (a booking was written); cheap, never waits."""
        if self._kicked is not None:
            self._kicked.set()

    async def run(self) -> None:
        assert self._kicked is not None
        while True:
            self._kicked.clear()
            try:
                await asyncio.to_thread(self.reconcile_once)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("slurm: reconciliation failed; trying again")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), self.pause())

    def status(self) -> dict[str, Any]:
        report = self.report
        return {
            "enabled": True,
            "partition": self.inventory.partition,
            "conf": self.section.conf,
            "reconcile_seconds": self.section.reconcile_seconds,
            "hold_partition": self.section.hold_partition,
            "gres_reservations": self.gres_reservations,
            "rounds": self.rounds,
            "nodes": {name: s.model_dump() for name, s in self.inventory.status.items()},
            "unusable": self.inventory.unusable(),
            "inventory_error": self.inventory_error,
            "inventory_changes": unit_changes(self.booked, self.inventory),
            "error": self.error,
            "report": report.as_dict() if report else None,
            "lines": report.lines() if report else [],
            "recent": [{"at": at, "line": line} for at, line in self.recent],
            "accounting": self.usage.status(),
        }


# -- wiring --------------------------------------------------------------------------------


def connect(cfg: WerkhubConfig) -> tuple[WerkhubConfig, SlurmSync | None]:
    """At start-up (blocking): with ``slurm.enabled``, the configuration whose ``gpus`` are
    the cluster's GPU nodes, and the sync; otherwise ``cfg`` as it is and None. The
    service does not start without the cluster's inventory."""
    if not cfg.slurm.enabled:
        return cfg, None
    client = setup.client(cfg.slurm)
    stock = setup.read_inventory(cfg.slurm, client)
    log.info(
        "slurm: booking the GPUs of partition %s: %s",
        stock.partition,
        ", ".join(f"{n.name} ({len(n.devices)})" for n in stock.nodes),
    )
    return cfg.model_copy(update={"gpus": stock.section()}), SlurmSync(cfg.slurm, stock, client)


def of(app: FastAPI) -> SlurmSync | None:
    return getattr(app.state, "slurm_sync", None)


def start(app: FastAPI) -> None:
    """Start the reconciliation loop (its first round at once), if Slurm is enabled."""
    sync = of(app)
    if sync is not None:
        sync.start(app.state.bookings)


async def stop(app: FastAPI) -> None:
    sync = of(app)
    if sync is not None:
        await sync.stop()


def kick(app: FastAPI) -> None:
    """After a booking write: reconcile soon (nothing when Slurm is not enabled)."""
    sync = of(app)
    if sync is not None:
        sync.kick()


async def withdraw(app: FastAPI, booking_id: int) -> None:
    """Undo a booking Slurm refused: cancelled before its start, released after it."""
    manager: BookingManager = app.state.bookings
    caller = Caller(ACTOR, admin=True)
    for step in (manager.cancel, manager.release):
        try:
            await app.state.gates.write(step, caller, booking_id)
            return
        except LedgerError:
            continue
    log.warning("slurm: booking %s refused by Slurm is no longer held anyway", booking_id)


async def hold_created(app: FastAPI, booking: Mapping[str, Any]) -> None:
    """Have Slurm hold a booking just made. Refused (an overlap with a reservation made
    outside werkhub, no OS account): the booking is withdrawn and :class:`NotHeld` carries
    Slurm's reason and status. Slurm unreachable: the booking stays, and the loop holds it
    once Slurm answers again."""
    sync = of(app)
    if sync is None:
        return
    try:
        await asyncio.to_thread(sync.hold, booking)
    except WerkhubError as exc:
        if exc.status >= 500:
            log.warning("slurm: booking %s not held yet: %s", booking["id"], exc)
            return
        await withdraw(app, int(booking["id"]))
        raise NotHeld(exc, int(booking["id"])) from exc
    finally:
        sync.kick()


router = APIRouter(prefix="/api/slurm", tags=["slurm"])


@router.get("/status", summary="The last reconciliation with Slurm (administrators)")
async def slurm_status(request: Request, user: CurrentUser) -> dict[str, Any]:
    if not user.admin:
        raise HTTPException(403, "only administrators see the Slurm reconciliation")
    sync = of(request.app)
    return sync.status() if sync is not None else {"enabled": False}
