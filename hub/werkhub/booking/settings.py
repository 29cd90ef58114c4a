"""Who calls the booking services, and the settings they run with."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from werkhub.booking.idle import IdlePolicy
from werkhub.booking.ledger import LedgerError, TypePool, Unit
from werkhub.booking.quota import LayeredPolicies, PolicySet


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    units: tuple[Unit, ...]
    #: the configured policies, or those under organisations' policies (service)
    policies: PolicySet | LayeredPolicies
    tz: ZoneInfo
    no_show_minutes: int = 15
    warn_minutes: int = 15
    end_action: str = "stop"  # stop | downgrade
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    search_horizon: timedelta = timedelta(days=14)
    #: each type's units grouped by node (``ledger.TypePool``), types in name order:
    #: device choice, capacity and the largest node per type (computed once: sites have
    #: thousands of units)
    pools: dict[str, TypePool] = field(init=False, repr=False, compare=False)
    #: ids of simulated units (a booking holding one is shown as simulated)
    simulated_ids: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Unit]] = defaultdict(list)
        for unit in self.units:
            grouped[unit.gpu_type].append(unit)
        pools = {t: TypePool(us) for t, us in sorted(grouped.items())}
        object.__setattr__(self, "pools", pools)
        simulated = frozenset(u.id for u in self.units if u.simulated)
        object.__setattr__(self, "simulated_ids", simulated)

    @property
    def gpu_types(self) -> list[str]:
        return list(self.pools)

    def pool(self, gpu_type: str) -> TypePool:
        return self.pools.get(gpu_type) or TypePool(())

    def check_type(self, gpu_type: str, count: int) -> None:
        """Refuse a GPU type not configured here, or more units than one node has."""
        if gpu_type not in self.pools:
            raise LedgerError(
                "invalid",
                f"unknown GPU type '{gpu_type}'; known: {', '.join(self.pools)}",
                field="gpu_type",
            )
        most = self.pools[gpu_type].largest_node
        if count > most:
            raise LedgerError(
                "invalid",
                f"at most {most} x {gpu_type} fit on one node; a booking stays on one node",
                field="count",
            )
