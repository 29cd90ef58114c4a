"""How Slurm holds a booking right now, for the jobs that run inside it (servers and
scheduled runs): a reservation ``werkhub-b<id>`` (whole nodes), the booking's own partition
``werkhub-b<id>`` (part of a node, :mod:`werkhub.slurm.preempt`), or nothing yet (the
service's reconciliation makes it within ``slurm.reconcile_seconds``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from werkhub.slurm.cluster import SlurmClient
from werkhub.slurm.commands import reservation_name


def held_as(client: SlurmClient, booking_id: int) -> tuple[bool, bool]:
    """(reserved, own partition): what Slurm has for booking ``booking_id`` now."""
    name = reservation_name(booking_id)
    if client.reservation(name) is not None:
        return True, False
    return False, any(p.name == name for p in client.partitions())


def wait_held(
    client: SlurmClient,
    booking_id: int,
    timeout: float,
    *,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, bool]:
    """:func:`held_as`, asked again for up to ``timeout`` seconds until Slurm holds the
    booking one way or the other; (False, False) when it still does not."""
    deadline = clock() + timeout
    while True:
        found = held_as(client, booking_id)
        if any(found) or clock() >= deadline:
            return found
        sleep(interval)
