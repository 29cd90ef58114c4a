"""Who calls the booking services, and the settings they run with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from werkhub.booking.idle import IdlePolicy
from werkhub.booking.ledger import LedgerError, Unit, max_per_node
from werkhub.booking.quota import PolicySet


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    units: tuple[Unit, ...]
    policies: PolicySet
    tz: ZoneInfo
    no_show_minutes: int = 15
    warn_minutes: int = 15
    end_action: str = "stop"  # stop | downgrade
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    search_horizon: timedelta = timedelta(days=14)

    @property
    def gpu_types(self) -> list[str]:
        return sorted({u.gpu_type for u in self.units})

    def check_type(self, gpu_type: str, count: int) -> None:
        """Refuse a GPU type not configured here, or more units than one node has."""
        types = self.gpu_types
        if gpu_type not in types:
            raise LedgerError(
                "invalid",
                f"unknown GPU type '{gpu_type}'; known: {', '.join(types)}",
                field="gpu_type",
            )
        most = max_per_node(self.units, gpu_type)
        if count > most:
            raise LedgerError(
                "invalid",
                f"at most {most} x {gpu_type} fit on one node; a booking stays on one node",
                field="count",
            )
