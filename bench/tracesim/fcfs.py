"""Baseline: plain first-come first-served, no bookings (what a queue-only scheduler gives).

Each real task (no-show bookings have no counterpart: nobody submits a job they will not
run) joins its GPU type's queue at its desired start and starts, in arrival order, as soon
as ``count`` GPUs of that type are free on one node (best fit, as the ledger chooses:
the node with the fewest free GPUs that fits). A task that does not fit yet holds back the
tasks of its type behind it (strict FCFS). It then runs its real run time and frees its
GPUs at its end. Pure Python: no ledger, no database.

``backfill=True`` is the kinder queue most cluster schedulers are: a task that does not
fit yet holds back nobody; any later task of its type that fits starts (first fit in
arrival order; the big task may then wait longer).
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass, field

from tracesim.workload import Request, Workload


@dataclass
class FcfsOutcome:
    waits: list[int] = field(default_factory=list)
    used: int = 0
    busy: float = 0.0
    last_end: int = 0
    max_queue: int = 0


class Pool:
    """Free GPUs per node of one type."""

    def __init__(self) -> None:
        self.free: dict[str, int] = {}
        self.order: dict[str, int] = {}

    def add(self, node: str) -> None:
        self.order.setdefault(node, len(self.order))
        self.free[node] = self.free.get(node, 0) + 1

    def take(self, count: int) -> str | None:
        fitting = [(n, self.order[node], node) for node, n in self.free.items() if n >= count]
        if not fitting:
            return None
        _, _, node = min(fitting)
        self.free[node] -= count
        return node

    def give(self, node: str, count: int) -> None:
        self.free[node] += count


def fcfs(workload: Workload, backfill: bool = False) -> FcfsOutcome:
    pools: dict[str, Pool] = defaultdict(Pool)
    for unit in workload.units:
        pools[unit.gpu_type].add(unit.node)
    arrivals = sorted(
        (r for r in workload.requests if not r.phantom), key=lambda r: (r.desired, r.user)
    )
    queues: dict[str, deque[Request]] = defaultdict(deque)
    ends: list[tuple[int, str, str, int]] = []  # (minute, type, node, count)
    out = FcfsOutcome()
    i = 0
    while i < len(arrivals) or ends:
        now = min(
            arrivals[i].desired if i < len(arrivals) else 1 << 62,
            ends[0][0] if ends else 1 << 62,
        )
        touched: set[str] = set()
        while ends and ends[0][0] == now:
            _, gpu_type, node, count = heapq.heappop(ends)
            pools[gpu_type].give(node, count)
            touched.add(gpu_type)
        while i < len(arrivals) and arrivals[i].desired == now:
            queues[arrivals[i].gpu_type].append(arrivals[i])
            touched.add(arrivals[i].gpu_type)
            i += 1
        out.max_queue = max(out.max_queue, sum(len(q) for q in queues.values()))
        for gpu_type in sorted(touched):
            waiting: deque[Request] = deque()
            queue = queues[gpu_type]
            while queue:
                node = pools[gpu_type].take(queue[0].count)
                if node is None:
                    if not backfill:
                        break
                    waiting.append(queue.popleft())
                    continue
                r = queue.popleft()
                out.waits.append(now - r.desired)
                out.used += r.run * r.count
                out.busy += r.run * r.count * r.util
                out.last_end = max(out.last_end, now + r.run)
                heapq.heappush(ends, (now + r.run, gpu_type, node, r.count))
            queue.extendleft(reversed(waiting))
    return out
