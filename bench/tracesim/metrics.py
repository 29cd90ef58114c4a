"""The printed figures, from the ledger's own records where the ledger has them.

Per policy set, in GPU-minutes (a booking of ``count`` GPUs counts ``count`` per minute):

* booked: ``bookings`` rows not cancelled, ``booked_end - start`` (what people asked for);
* released: what the ledger gave back early: ``booked_end - end`` of released bookings
  and of no-shows (the ledger ends a no-show where it frees its devices);
* used: minutes the tasks ran on their booking (the simulation's truth; the ledger only
  knows when a server ran: ``usage_segments``, checked against the replay below);
* idle = booked - used - released: held for someone, but no task ran on it.

Two checks per ledger replay, both to the minute: ``booked = used + idle + released``
with ``idle`` tallied by the replay from what it did (released at, server stopped at), and
the ledger's ``usage_segments`` = the minutes the replay had servers up on bookings.
``Accounting.usage`` (the usage report) is compared with the booked figure as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from tracesim.fcfs import FcfsOutcome
from tracesim.replay import Outcome, at, to_min_epoch
from tracesim.workload import Workload
from werkhub.booking.ledger import State
from werkhub.booking.tables import bookings, usage


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Figures:
    name: str
    used: int
    busy: float
    held: int
    waits: list[int]
    requests: int
    served: int
    booked: int | None = None
    released: int | None = None
    server: int | None = None
    from_waitlist: int = 0
    refused: int = 0
    no_show_refused: int = 0
    cut: int = 0
    identity_gap: int | None = None
    server_gap: int | None = None
    usage_report_gap_h: float | None = None
    last_end: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def idle(self) -> int | None:
        if self.booked is None or self.released is None:
            return None
        return self.booked - self.used - self.released

    @property
    def idle_share(self) -> float | None:
        idle = self.idle
        return None if idle is None or not self.booked else idle / self.booked

    @property
    def p50(self) -> float:
        return percentile(self.waits, 0.5)

    @property
    def p95(self) -> float:
        return percentile(self.waits, 0.95)

    @property
    def p95_with_refused(self) -> float:
        """p95 with each refused request counted as having waited its whole tolerance."""
        censored = [int(self.stats.get("max_wait_min", 0))] * self.refused
        return percentile(self.waits + censored, 0.95)


def ledger_figures(outcome: Outcome) -> Figures:
    m = outcome.manager
    epoch = to_min_epoch()
    booked = released = server = 0
    with m.read() as conn:
        rows = conn.execute(
            select(
                bookings.c.id,
                bookings.c.count,
                bookings.c.start_min,
                bookings.c.end_min,
                bookings.c.booked_end_min,
                bookings.c.state,
            ).where(bookings.c.state != State.CANCELLED.value)
        ).all()
        lo = hi = epoch
        for row in rows:
            booked += row.count * (row.booked_end_min - row.start_min)
            lo, hi = min(lo, row.start_min), max(hi, row.booked_end_min)
            if row.state in (State.RELEASED.value, State.NO_SHOW.value):
                # a no-show ends where the ledger freed its devices, like a release
                released += row.count * (row.booked_end_min - row.end_min)
        for seg in conn.execute(select(usage.c.count, usage.c.start, usage.c.end)):
            assert seg.end is not None, "a usage segment is still open after the replay"
            server += round(seg.count * (seg.end - seg.start) / 60)
    report = m.usage(at(lo - epoch), at(hi - epoch + 1))
    report_booked_h = sum(t["booked"] for t in report.values())

    people = outcome.people
    real = [p for p in people if not p.req.phantom]
    served = [p for p in real if p.served]
    used = sum(p.busy * p.req.count for p in served)
    sim_idle = sim_server = 0
    for p in people:
        if not p.served:
            continue
        assert p.held_until is not None and p.start is not None
        sim_idle += (p.held_until - p.start - p.busy) * p.req.count
        if not p.req.phantom:
            up = p.busy if p.req.releases and not p.cut else p.held_until - p.start
            sim_server += up * p.req.count
    return Figures(
        name=outcome.mode.name,
        used=used,
        busy=sum(p.busy * p.req.count * p.req.util for p in served),
        held=booked - released,
        waits=[(p.start or 0) - p.req.desired for p in served],
        requests=len(real),
        served=len(served),
        booked=booked,
        released=released,
        server=server,
        from_waitlist=sum(p.via_waitlist for p in served),
        refused=len(real) - len(served),
        no_show_refused=sum(1 for p in people if p.req.phantom and not p.served),
        cut=sum(p.cut for p in served),
        identity_gap=booked - (used + sim_idle + released),
        server_gap=server - sim_server,
        usage_report_gap_h=report_booked_h - booked / 60,
        last_end=max(((p.start or 0) + p.busy for p in served), default=0),
        stats=outcome.stats,
    )


def fcfs_figures(
    out: FcfsOutcome, workload: Workload, wall_s: float, name: str = "FCFS, no bookings"
) -> Figures:
    real = workload.real
    return Figures(
        name=name,
        used=out.used,
        busy=out.busy,
        held=out.used,
        waits=out.waits,
        requests=len(real),
        served=len(out.waits),
        last_end=out.last_end,
        stats={"wall_s": wall_s, "max_queue": out.max_queue},
    )


def _h(minutes: float | None) -> str:
    return "-" if minutes is None else f"{minutes / 60:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(sets: list[Figures], workload: Workload) -> list[str]:
    """One column per policy set."""
    capacity = len(workload.units)
    span = max(workload.end, *(f.last_end for f in sets)) - workload.start
    site = capacity * span

    def row(label: str, cells: list[str]) -> str:
        return f"  {label:<38}" + "".join(f"{c:>22}" for c in cells)

    lines = [row("", [f.name for f in sets])]
    lines.append(row("requests (real tasks)", [f"{f.requests:,}" for f in sets]))
    lines.append(row("booked GPU-h", [_h(f.booked) for f in sets]))
    lines.append(row("used GPU-h (tasks ran)", [_h(f.used) for f in sets]))
    lines.append(row("released early GPU-h", [_h(f.released) for f in sets]))
    lines.append(row("idle GPU-h (booked, unused, held)", [_h(f.idle) for f in sets]))
    lines.append(row("share of booked GPU-min left idle", [_pct(f.idle_share) for f in sets]))
    lines.append(row("site: GPUs held (share of capacity)", [_pct(f.held / site) for f in sets]))
    lines.append(row("site GPU utilisation (used/capacity)", [_pct(f.used / site) for f in sets]))
    lines.append(row("  same, weighted by gpu_milli", [_pct(f.busy / site) for f in sets]))
    lines.append(row("wait p50 (min, start - desired)", [f"{f.p50:,.0f}" for f in sets]))
    lines.append(row("wait p95 (min)", [f"{f.p95:,.0f}" for f in sets]))
    censored = [f"{f.p95_with_refused:,.0f}" for f in sets]
    lines.append(row("  p95, refused as max_wait_hours", censored))
    lines.append(row("wait max (min)", [f"{max(f.waits, default=0):,}" for f in sets]))
    share = [_pct(f.from_waitlist / f.served if f.served else 0) for f in sets]
    lines.append(row("served from the waitlist", share))
    lines.append(row("refused requests", [f"{f.refused:,}" for f in sets]))
    lines.append(row("  no-show bookings refused", [f"{f.no_show_refused:,}" for f in sets]))
    lines.append(row("tasks cut by the idle detector", [f"{f.cut:,}" for f in sets]))
    gap = ["-" if f.identity_gap is None else f"{f.identity_gap:+d}" for f in sets]
    lines.append(row("booked-(used+idle+released), min", gap))
    server = ["-" if f.server_gap is None else f"{f.server_gap:+d}" for f in sets]
    lines.append(row("usage_segments - servers up, min", server))
    report = ["-" if f.usage_report_gap_h is None else f"{f.usage_report_gap_h:+.3f}" for f in sets]
    lines.append(row("Accounting.usage booked - table, GPU-h", report))
    lines.append(row("replay wall time (s)", [f"{f.stats.get('wall_s', 0):.1f}" for f in sets]))
    lines.append(
        f"  site: {capacity:,} GPUs over {span / 1440:.2f} days, from the window start "
        f"(minute {workload.start:,} of the trace) to the trace's or the last task's end"
    )
    return lines
