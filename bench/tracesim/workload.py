"""The trace as werkhub sees it: units of the node inventory, and people's booking requests.

Times are whole minutes since the trace's start (the ledger's resolution): a desired start
is the task's creation time rounded down, a run time its ``deletion - scheduled`` rounded
up (at least one minute).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tracesim.assumptions import Assumptions
from tracesim.trace import Node, Task, Trace
from werkhub.booking.ledger import Unit


@dataclass(frozen=True)
class Request:
    """One person's wish: ``count`` x ``gpu_type`` from ``desired`` for ``booked`` minutes,
    asked for at ``asked``; a real task then runs ``run`` minutes at ``util`` of each GPU."""

    user: str
    gpu_type: str
    count: int
    util: float
    asked: int
    desired: int
    run: int
    booked: int
    releases: bool
    phantom: bool = False


@dataclass
class Workload:
    units: tuple[Unit, ...]
    requests: list[Request]
    #: minute the replay window starts and the trace ends
    start: int
    end: int
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def real(self) -> list[Request]:
        return [r for r in self.requests if not r.phantom]

    def capacity(self) -> dict[str, int]:
        per: Counter[str] = Counter(u.gpu_type for u in self.units)
        return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def kept_nodes(nodes: tuple[Node, ...], share: float) -> list[Node]:
    """The first ``ceil(share x n)`` nodes of each model (file order), at least one; a
    model's largest node is always kept so that every task shape still fits."""
    by_model: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        by_model[node.model].append(node)
    kept: set[str] = set()
    for group in by_model.values():
        n = max(1, math.ceil(share * len(group)))
        kept.update(node.name for node in group[:n])
        if n < len(group):
            kept.add(max(group, key=lambda node: node.gpus).name)
    return [node for node in nodes if node.name in kept]


def build_units(nodes: list[Node]) -> tuple[Unit, ...]:
    return tuple(
        Unit(id=f"{node.name}/{i}", node=node.name, gpu_type=node.model, index=i)
        for node in nodes
        for i in range(node.gpus)
    )


class TypeChooser:
    """A task's GPU type: the first model of its ``gpu_spec`` that exists here and has a
    node big enough; otherwise a model drawn with probability proportional to its GPU
    count, among the models with a node big enough for the task."""

    def __init__(self, nodes: list[Node], rng: random.Random) -> None:
        self.rng = rng
        self.gpus: Counter[str] = Counter()
        self.largest: dict[str, int] = defaultdict(int)
        for node in nodes:
            self.gpus[node.model] += node.gpus
            self.largest[node.model] = max(self.largest[node.model], node.gpus)
        self.models = sorted(self.gpus)

    def fits(self, model: str, count: int) -> bool:
        return self.largest.get(model, 0) >= count

    def choose(self, task: Task) -> tuple[str, bool] | None:
        """(model, from the task's spec), or None when no node fits the task at all."""
        for model in task.gpu_spec:
            if self.fits(model, task.num_gpu):
                return model, True
        models = [m for m in self.models if self.fits(m, task.num_gpu)]
        if not models:
            return None
        weights = [self.gpus[m] for m in models]
        return self.rng.choices(models, weights=weights)[0], False


def _lead(rng: random.Random, a: Assumptions) -> int:
    if rng.random() < a.on_demand_share:
        return 0
    most = int(a.max_advance_days * 24 * 60)
    return min(most, round(rng.expovariate(1 / a.lead_mean_minutes)))


def _booked(rng: random.Random, run: int, a: Assumptions) -> int:
    factor = 1 + (rng.expovariate(1 / a.overestimate_mean) if a.overestimate_mean > 0 else 0)
    steps = math.ceil(run * factor / a.round_minutes - 1e-9)
    return min(a.cap_minutes, max(1, steps) * a.round_minutes)


def build_workload(trace: Trace, a: Assumptions) -> Workload:
    """Units and requests; ``counts`` says what was skipped, clipped or cut, and why."""
    rng = random.Random(a.seed)
    nodes = kept_nodes(trace.nodes, a.node_share)
    chooser = TypeChooser(nodes, rng)
    start_s = trace.first_deletion if a.window == "observed" else 0
    counts: Counter[str] = Counter()
    requests: list[Request] = []
    for task in trace.tasks:
        if task.num_gpu < 1:
            counts["skipped: CPU-only task (num_gpu 0)"] += 1
            continue
        if task.scheduled is None:
            counts["skipped: never scheduled in the trace (Pending)"] += 1
            continue
        if task.deleted <= start_s:
            counts["skipped: ended before the replay window"] += 1
            continue
        if a.limit and counts["GPU tasks replayed"] >= a.limit:
            counts["skipped: beyond --limit"] += 1
            continue
        chosen = chooser.choose(task)
        if chosen is None:
            counts["skipped: no node of any model is big enough"] += 1
            continue
        gpu_type, from_spec = chosen
        counts["GPU tasks replayed"] += 1
        counts["  of which typed by gpu_spec"] += from_spec
        created = task.created
        if created < start_s:
            counts["  of which created before the window (enter at its start)"] += 1
            created = start_s
        began = max(task.scheduled, start_s)
        run = max(1, math.ceil((task.deleted - began) / 60))
        if run > a.cap_minutes:
            counts["  of which longer than max_booking_hours (cut)"] += 1
            counts["GPU-minutes cut from long tasks"] += (run - a.cap_minutes) * task.num_gpu
            run = a.cap_minutes
        if task.num_gpu == 1 and task.gpu_milli < 1000:
            counts["  of which fractional (book 1 whole GPU)"] += 1
        util = min(1.0, task.gpu_milli / 1000) if task.num_gpu == 1 else 1.0
        desired = created // 60
        booked = _booked(rng, run, a)
        lead = _lead(rng, a)
        releases = rng.random() < a.release_share
        requests.append(
            Request(
                user=task.name,
                gpu_type=gpu_type,
                count=task.num_gpu,
                util=util,
                asked=desired - lead,
                desired=desired,
                run=run,
                booked=booked,
                releases=releases,
            )
        )
        if rng.random() < a.no_show_share:
            counts["no-show bookings added"] += 1
            requests.append(
                Request(
                    user=f"{task.name}-noshow",
                    gpu_type=gpu_type,
                    count=task.num_gpu,
                    util=0.0,
                    asked=desired - _lead(rng, a),
                    desired=desired,
                    run=0,
                    booked=booked,
                    releases=False,
                    phantom=True,
                )
            )
    return Workload(
        units=build_units(nodes),
        requests=requests,
        start=start_s // 60,
        end=math.ceil(trace.end / 60),
        counts=counts,
    )
