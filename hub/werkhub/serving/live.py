"""What the supervisor keeps of each endpoint in memory: its serving replica, the
requests in flight per replica, its start or rollout under way, back-off after failures,
and this minute's figures (:class:`Meter`); the database keeps what survives a restart."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from werkhub.serving import spec as rules
from werkhub.serving.replicas import Replica


@dataclass
class Meter:
    """This minute's latencies and errors of one endpoint, flushed each minute."""

    minute: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    done: list[dict[str, Any]] = field(default_factory=list)

    def add(self, at: float, latency_ms: float, error: bool, version: str | None) -> None:
        minute = int(at // 60)
        if minute != self.minute:
            self.close(version)
            self.minute = minute
        self.latencies.append(latency_ms)
        self.errors += int(error)

    def close(self, version: str | None) -> None:
        if self.latencies:
            self.done.append(rules.summarise(self.minute, self.latencies, self.errors, version))
        self.latencies, self.errors = [], 0

    def take(self, now: float, version: str | None) -> list[dict[str, Any]]:
        if self.latencies and int(now // 60) != self.minute:
            self.close(version)
        done, self.done = self.done, []
        return done


@dataclass
class Live:
    """An endpoint as the supervisor runs it."""

    id: int
    owner: str
    name: str
    row: dict[str, Any]
    replica: Replica | None = None
    version: str | None = None
    booking_id: int | None = None
    inflight: dict[int, int] = field(default_factory=dict)
    last_request: float = field(default_factory=time.monotonic)
    starting: asyncio.Task[Replica] | None = None
    rollout: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0
    retry_at: float = 0.0
    alias_checked: float = 0.0
    meter: Meter = field(default_factory=Meter)
    pending_logs: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.row["settings"])

    @property
    def path(self) -> str:
        return f"{self.owner}/{self.name}"
