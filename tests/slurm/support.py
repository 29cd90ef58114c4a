"""Bookings as the ledger's API shows them, held through werkhub's reconciliation, and jobs
polled through ``scontrol -o show job`` (never ``sbatch --wait``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from tests.slurm.cluster import HOLD_PARTITION
from werkhub.booking import ledger
from werkhub.config.schema import SlurmUserMapping
from werkhub.slurm import commands, inventory, reservations, users
from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.commands import Job

PARTITION = "gpu"
#: hub alice runs Slurm jobs as OS user wh-alice
MAPPING = SlurmUserMapping(mode="prefix", prefix="wh-")
#: how long a booked user's job may take to start inside its reservation (stated in
#: docs/slurm.md; measured well under it on 2 shared cores)
START_BOUND_S = 30


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def booking(
    booking_id: int,
    user: str,
    devices: Iterable[str],
    *,
    start: datetime | None = None,
    minutes: int = 30,
    state: str = "active",
) -> dict[str, Any]:
    """A booking as ``werkhub.booking.reads.compose`` shows it (the fields Slurm needs);
    by default one under way since the current minute."""
    start = start or minute(ledger.utcnow())
    held = list(devices)
    return {
        "id": booking_id,
        "user": user,
        "gpu_type": "a100",
        "count": len(held),
        "start": start,
        "end": start + timedelta(minutes=minutes),
        "state": state,
        "devices": held,
    }


def wanted(
    client: SlurmClient, bookings: Iterable[Mapping[str, Any]], partition: str = PARTITION
) -> reservations.Desired:
    stock = inventory.read(client, PARTITION)
    return reservations.desired(
        bookings, stock, users.mapper(MAPPING), ledger.utcnow(), partition=partition
    )


def hold(
    client: SlurmClient,
    bookings: Iterable[Mapping[str, Any]],
    partition: str = PARTITION,
    hold_partition: str = HOLD_PARTITION,
) -> reservations.Report:
    """One reconciliation of the ledger's ``bookings`` against the cluster."""
    return reservations.reconcile(
        client, wanted(client, bookings, partition), hold_partition=hold_partition
    )


def reservation(client: SlurmClient, booking_id: int) -> commands.Reservation | None:
    return client.reservation(commands.reservation_name(booking_id))


def wait_job(
    client: SlurmClient, job_id: str, until: Callable[[Job], bool], timeout: float = 30
) -> Job:
    """Poll ``scontrol -o show job`` until ``until(job)`` holds; the job then."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if job is not None and until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} after {timeout} s: {job}")
        time.sleep(0.1)


def running(job: Job) -> bool:
    return job.state == "RUNNING"
