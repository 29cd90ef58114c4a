"""Who calls the booking manager, and the settings it runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from werkhub.booking.idle import IdlePolicy
from werkhub.booking.ledger import Unit
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
