"""What one reconciliation with Slurm found and did: reservations, booking partitions and
hold jobs made, changed and removed, intruding jobs requeued, Slurm's refusals, and the
bookings Slurm does not hold (with the reason). For the admin page, the log and
``GET /api/slurm/status``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

#: the actions as the report's sentences say them
PAST = {
    "create": "created",
    "update": "updated",
    "delete": "deleted",
    "requeue": "requeued",
    "cancel": "cancelled",
}


@dataclass(frozen=True)
class Skipped:
    """A holding booking Slurm does not enforce, and why."""

    booking_id: int
    user: str
    reason: str


@dataclass(frozen=True)
class Change:
    #: create, update, delete (reservations, partitions, holds), requeue (intruders) or
    #: cancel (jobs beyond a booking's GPUs)
    action: str
    name: str
    booking_id: int | None
    detail: str


@dataclass(frozen=True)
class Failure:
    action: str
    name: str
    booking_id: int | None
    error: str
    status: int


@dataclass
class Report:
    """What one reconciliation found and did."""

    at: datetime
    created: list[Change] = field(default_factory=list)
    updated: list[Change] = field(default_factory=list)
    deleted: list[Change] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: booking partitions (part of a node) made, changed, deleted
    partitions: list[Change] = field(default_factory=list)
    #: hold jobs submitted, their time limits changed, cancelled
    holds: list[Change] = field(default_factory=list)
    #: jobs of others requeued off GPUs a booking holds, and jobs cancelled that ran in a
    #: booking's partition with more GPUs than it holds
    preempted: list[Change] = field(default_factory=list)

    @property
    def repaired(self) -> list[Change]:
        return [
            *self.created,
            *self.updated,
            *self.deleted,
            *self.partitions,
            *self.holds,
            *self.preempted,
        ]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "created": [asdict(c) for c in self.created],
            "updated": [asdict(c) for c in self.updated],
            "deleted": [asdict(c) for c in self.deleted],
            "partitions": [asdict(c) for c in self.partitions],
            "holds": [asdict(c) for c in self.holds],
            "preempted": [asdict(c) for c in self.preempted],
            "failed": [asdict(f) for f in self.failed],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def lines(self) -> list[str]:
        """One sentence per event, for the admin page and the log."""
        out = [f"{PAST.get(c.action, c.action)} {c.name}: {c.detail}" for c in self.repaired]
        out += [f"could not {f.action} {f.name or 'reservations'}: {f.error}" for f in self.failed]
        out += [
            f"booking {s.booking_id} ({s.user}) not held by Slurm: {s.reason}" for s in self.skipped
        ]
        return out
