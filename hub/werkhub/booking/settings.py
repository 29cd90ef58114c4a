"""Who calls the booking services, and the settings they run with."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from werkhub.booking.idle import IdlePolicy
from werkhub.booking.ledger import LedgerError, TypePool, Unit, max_per_node
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
    #: the units of each type, in inventory order (computed once: sites have thousands)
    by_type: dict[str, tuple[Unit, ...]] = field(init=False, repr=False, compare=False)
    #: the most units of each type on one node
    most_per_node: dict[str, int] = field(init=False, repr=False, compare=False)
    #: each type's units grouped by node (``ledger.TypePool``): device choice per type
    pools: dict[str, TypePool] = field(init=False, repr=False, compare=False)
    #: ids of simulated units (a booking holding one is shown as simulated)
    simulated_ids: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Unit]] = defaultdict(list)
        for unit in self.units:
            grouped[unit.gpu_type].append(unit)
        object.__setattr__(self, "by_type", {t: tuple(us) for t, us in sorted(grouped.items())})
        most = {t: max_per_node(us, t) for t, us in grouped.items()}
        object.__setattr__(self, "most_per_node", most)
        object.__setattr__(self, "pools", {t: TypePool(us) for t, us in grouped.items()})
        simulated = frozenset(u.id for u in self.units if u.simulated)
        object.__setattr__(self, "simulated_ids", simulated)

    @property
    def gpu_types(self) -> list[str]:
        return list(self.by_type)

    def units_of(self, gpu_type: str) -> tuple[Unit, ...]:
        return self.by_type.get(gpu_type, ())

    def pool(self, gpu_type: str) -> TypePool:
        return self.pools.get(gpu_type) or TypePool(())

    def check_type(self, gpu_type: str, count: int) -> None:
        """Refuse a GPU type not configured here, or more units than one node has."""
        if gpu_type not in self.by_type:
            raise LedgerError(
                "invalid",
                f"unknown GPU type '{gpu_type}'; known: {', '.join(self.by_type)}",
                field="gpu_type",
            )
        most = self.most_per_node[gpu_type]
        if count > most:
            raise LedgerError(
                "invalid",
                f"at most {most} x {gpu_type} fit on one node; a booking stays on one node",
                field="count",
            )
