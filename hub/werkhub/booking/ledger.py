"""Pure booking rules: intervals, device choice, free slots, waitlist, no-shows.

Standard library and pydantic only: no database, web framework or JupyterHub import.
Times are timezone-aware UTC datetimes with minute precision; ``utcnow`` is the seam
tests replace to move time.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from werkhub import errors
from werkhub.errors import WerkhubError

MINUTE = timedelta(minutes=1)
#: hard cap on any booking's length, whatever the policy (bounds range queries)
MAX_BOOKING = timedelta(days=31)


def utcnow() -> datetime:
    """The current time; tests patch this seam."""
    return datetime.now(UTC)


def now_ts() -> float:
    """The current time as a POSIX timestamp, read through the ``utcnow`` seam: every
    stamp the booking code writes (audit, usage, updated) comes from here."""
    return utcnow().timestamp()


class State(StrEnum):
    BOOKED = "booked"
    ACTIVE = "active"
    ENDED = "ended"
    CANCELLED = "cancelled"
    RELEASED = "released"
    NO_SHOW = "no_show"


#: states whose devices are promised to their booking for [start, end)
HOLDING = frozenset({State.BOOKED, State.ACTIVE})
#: states whose time counts against quota ([start, end) with end cut at release)
CHARGED = frozenset({State.BOOKED, State.ACTIVE, State.ENDED, State.RELEASED})


class LedgerError(WerkhubError, ValueError):
    """A request the rules refuse; ``kind`` picks the HTTP status (``STATUS``)."""

    #: the HTTP status of each kind of refusal
    STATUS: ClassVar[dict[str, int]] = {
        "invalid": 422,
        "conflict": 409,
        "policy": 403,
        "state": 409,
    }

    @property  # type: ignore[override]
    def status(self) -> int:
        return self.STATUS.get(self.kind, 400)

    def __init__(self, kind: str, message: str, **detail: object) -> None:
        super().__init__(message)
        self.kind = kind  # "invalid" | "conflict" | "policy" | "state"
        self.message = message
        self.detail = detail


class NotFound(errors.NotFound, LookupError):
    """Nothing with that id is visible to the caller (never says whether it exists)."""


class Unit(BaseModel):
    """One bookable unit: a whole GPU or a MIG slice (its own type)."""

    model_config = ConfigDict(frozen=True)

    id: str  # "node/index" or "node/index/mig-profile-n"
    node: str
    gpu_type: str
    index: int
    simulated: bool = False


class Slot(BaseModel):
    """A booking as the ledger sees it."""

    model_config = ConfigDict(frozen=True)

    id: int
    user: str
    gpu_type: str
    count: int
    start: datetime
    end: datetime
    devices: tuple[str, ...]
    state: State

    @property
    def holding(self) -> bool:
        return self.state in HOLDING


def floor_minute(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise LedgerError("invalid", "times need a UTC offset, e.g. 2026-11-23T08:00:00+01:00")
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def ceil_minute(moment: datetime) -> datetime:
    floored = floor_minute(moment)
    return floored if floored == moment.astimezone(UTC) else floored + MINUTE


def release_end(start: datetime, end: datetime, now: datetime) -> datetime:
    """Where a started booking released at ``now`` ends: the next full minute, at least
    one minute after its start, never later than it was booked to end."""
    return min(max(ceil_minute(now), start + MINUTE), end)


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    """Half-open intervals [a_start, a_end) and [b_start, b_end) share a moment."""
    return a_start < b_end and b_start < a_end


def check_interval(start: datetime, end: datetime) -> None:
    if end <= start:
        raise LedgerError("invalid", "end must be after start", start=start, end=end)
    if end - start > MAX_BOOKING:
        raise LedgerError("invalid", f"a booking lasts at most {MAX_BOOKING.days} days")


def busy_units(
    slots: Iterable[Slot], start: datetime, end: datetime, ignore: int | None = None
) -> set[str]:
    """Units promised to other holding bookings somewhere in [start, end)."""
    busy: set[str] = set()
    for slot in slots:
        if slot.id != ignore and slot.holding and overlaps(slot.start, slot.end, start, end):
            busy.update(slot.devices)
    return busy


class TypePool:
    """The units of one GPU type grouped by node, built once per inventory: choosing
    devices then costs what the busy units cost, not what the site's size does."""

    def __init__(self, units: Iterable[Unit]) -> None:
        grouped: dict[str, list[Unit]] = defaultdict(list)
        for unit in units:
            grouped[unit.node].append(unit)
        #: each node's units, lowest indexes first
        self.nodes = {
            node: tuple(sorted(us, key=lambda u: (u.index, u.id))) for node, us in grouped.items()
        }
        self.node_of = {u.id: node for node, us in self.nodes.items() for u in us}
        #: (size, node) ascending: the best fit among nodes with nothing busy is the first
        #: whose size suffices
        self.by_size = sorted((len(us), node) for node, us in self.nodes.items())

    @property
    def size(self) -> int:
        """Units of the type."""
        return len(self.node_of)

    @property
    def largest_node(self) -> int:
        """The most units of the type on one node (0 without any)."""
        return self.by_size[-1][0] if self.by_size else 0

    def best_fit(self, busy: set[str], count: int) -> tuple[str, ...] | None:
        """``count`` units on the node with the fewest free units that still fits (ties:
        the node's name), lowest indexes first; None if no node has that many free."""
        taken: dict[str, int] = defaultdict(int)
        for unit_id in busy:
            node = self.node_of.get(unit_id)
            if node is not None:
                taken[node] += 1
        best: tuple[int, str] | None = None
        for node, n in taken.items():
            free = len(self.nodes[node]) - n
            if free >= count and (best is None or (free, node) < best):
                best = (free, node)
        for size, node in self.by_size[bisect.bisect_left(self.by_size, (count, "")) :]:
            if best is not None and (size, node) >= best:
                break
            if node not in taken:
                best = (size, node)
                break
        if best is None:
            return None
        free_units = (u.id for u in self.nodes[best[1]] if u.id not in busy)
        return tuple(itertools.islice(free_units, count))


def _pool(units: Sequence[Unit] | TypePool, gpu_type: str) -> TypePool:
    if isinstance(units, TypePool):
        return units
    return TypePool(u for u in units if u.gpu_type == gpu_type)


def choose_devices(
    units: Sequence[Unit] | TypePool,
    slots: Iterable[Slot],
    gpu_type: str,
    count: int,
    start: datetime,
    end: datetime,
    *,
    prefer: Sequence[str] = (),
    ignore: int | None = None,
) -> tuple[str, ...] | None:
    """Pick ``count`` free units of ``gpu_type`` on one node, or None.

    ``units`` are the inventory (or the type's ``TypePool``, which spares sorting it).
    Preferred units (a booking's current devices, when extending) are kept if all are
    still free. Otherwise the node with the fewest free units that still fits is chosen
    (best fit keeps whole nodes free for large bookings), lowest indexes first.
    """
    busy = busy_units(slots, start, end, ignore)
    pool = _pool(units, gpu_type)
    if prefer and len(prefer) == count and all(p in pool.node_of and p not in busy for p in prefer):
        return tuple(prefer)
    return pool.best_fit(busy, count)


def capacity(units: Sequence[Unit], gpu_type: str) -> int:
    return sum(1 for u in units if u.gpu_type == gpu_type)


def max_per_node(units: Sequence[Unit], gpu_type: str) -> int:
    per_node: dict[str, int] = defaultdict(int)
    for unit in units:
        if unit.gpu_type == gpu_type:
            per_node[unit.node] += 1
    return max(per_node.values(), default=0)


def earliest_slot(
    units: Sequence[Unit] | TypePool,
    slots: Sequence[Slot],
    gpu_type: str,
    count: int,
    duration: timedelta,
    not_before: datetime,
    latest_start: datetime,
    *,
    ignore: int | None = None,
    accept: Callable[[datetime], bool] | None = None,
) -> tuple[datetime, tuple[str, ...]] | None:
    """The earliest start in [not_before, latest_start] where the request fits, or None.

    A request that does not fit at ``not_before`` can only start fitting when a holding
    booking ends, so those ends are the only other candidates (of this type, and of any
    type when ``accept`` - e.g. the user's policy - may change its mind at such an end).
    """
    units = _pool(units, gpu_type)
    candidates = {not_before}
    for slot in slots:
        same_type = slot.gpu_type == gpu_type or accept is not None
        if slot.holding and same_type and not_before < slot.end <= latest_start:
            candidates.add(slot.end)
    for start in sorted(candidates):
        devices = choose_devices(
            units, slots, gpu_type, count, start, start + duration, ignore=ignore
        )
        if devices is not None and (accept is None or accept(start)):
            return start, devices
    return None


def busy_per_step(
    intervals: Iterable[tuple[str, int, int]], lo: int, hi: int, step: int
) -> list[int]:
    """Units busy in each step [lo + i*step, lo + (i+1)*step) of [lo, hi).

    ``intervals`` are (unit, start, end) in any integer time unit (werkhub uses minutes).
    A unit counts once per step however many of its intervals touch it. Each unit's
    intervals become runs of steps, merged where they touch, and each merged run adds one
    to a difference array: the work grows with the intervals (sorting them per unit) and
    the number of steps, never with their product.
    """
    n_steps = -(-(hi - lo) // step)
    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for unit, start, end in intervals:
        first, last = max(start, lo), min(end, hi)
        if last > first:
            runs[unit].append(((first - lo) // step, (last - 1 - lo) // step + 1))
    diff = [0] * (n_steps + 1)
    for spans in runs.values():
        if len(spans) == 1:  # most units hold one booking in a window
            diff[spans[0][0]] += 1
            diff[spans[0][1]] -= 1
            continue
        spans.sort()
        run_lo, run_hi = spans[0]
        for a, b in spans:
            if a <= run_hi:
                run_hi = max(run_hi, b)
                continue
            diff[run_lo] += 1
            diff[run_hi] -= 1
            run_lo, run_hi = a, b
        diff[run_lo] += 1
        diff[run_hi] -= 1
    busy, level = [], 0
    for change in diff[:n_steps]:
        level += change
        busy.append(level)
    return busy


def check_steps(start: datetime, end: datetime, step: timedelta) -> None:
    if step < MINUTE:
        raise LedgerError("invalid", "step must be at least one minute")
    if (end - start) / step > 10_000:
        raise LedgerError("invalid", "too many steps: widen the step or narrow the range")


def free_counts(
    units: Sequence[Unit],
    slots: Iterable[Slot],
    gpu_type: str,
    start: datetime,
    end: datetime,
    step: timedelta,
) -> list[tuple[datetime, int]]:
    """Free units of ``gpu_type`` in each step [t, t+step) from start to end."""
    check_steps(start, end, step)
    total = capacity(units, gpu_type)
    seconds = int(step.total_seconds())
    origin = start.timestamp()
    intervals = [
        (unit, int(s.start.timestamp() - origin), int(s.end.timestamp() - origin))
        for s in slots
        if s.holding and s.gpu_type == gpu_type
        for unit in s.devices
    ]
    span = int((end - start).total_seconds())
    busy = busy_per_step(intervals, 0, span, seconds)
    return [(start + i * step, total - n) for i, n in enumerate(busy)]


class WaitEntry(BaseModel):
    """A queued request: served in ``id`` order when a slot frees."""

    model_config = ConfigDict(frozen=True)

    id: int
    user: str
    gpu_type: str
    count: int
    duration: timedelta
    not_before: datetime
    latest_start: datetime


def serve_waitlist(
    entries: Sequence[WaitEntry],
    units: Sequence[Unit] | Mapping[str, TypePool],
    slots: Sequence[Slot],
    now: datetime,
    admit: Callable[[WaitEntry, datetime, Sequence[Slot]], bool] | None = None,
) -> list[tuple[WaitEntry, datetime, tuple[str, ...]]]:
    """Grant queued requests, oldest first; each grant is promised before the next is tried.

    ``admit(entry, start, promised)`` re-checks the owner's policy at the start found (a
    request queued under its policy may break it at a later start); ``slots`` must then
    hold the owners' other bookings too. Returns (entry, start, devices) per grant.
    """
    granted = []
    promised = list(slots)
    if isinstance(units, Mapping):
        pools = dict(units)
    else:
        grouped: dict[str, list[Unit]] = defaultdict(list)
        for unit in units:
            grouped[unit.gpu_type].append(unit)
        pools = {t: TypePool(us) for t, us in grouped.items()}
    for entry in sorted(entries, key=lambda e: e.id):
        begin = max(entry.not_before, floor_minute(now))
        if begin > entry.latest_start:
            continue
        accept = None
        if admit is not None:
            accept = functools.partial(admit, entry, promised=promised)
        found = earliest_slot(
            pools.get(entry.gpu_type) or TypePool(()),
            promised,
            entry.gpu_type,
            entry.count,
            entry.duration,
            begin,
            entry.latest_start,
            accept=accept,
        )
        if found is None:
            continue
        start, devices = found
        granted.append((entry, start, devices))
        promised.append(
            Slot(
                id=-entry.id,
                user=entry.user,
                gpu_type=entry.gpu_type,
                count=entry.count,
                start=start,
                end=start + entry.duration,
                devices=devices,
                state=State.BOOKED,
            )
        )
    return granted


def expired_waits(entries: Iterable[WaitEntry], now: datetime) -> list[WaitEntry]:
    return [e for e in entries if e.latest_start < floor_minute(now)]


def no_shows(
    slots: Iterable[Slot], now: datetime, no_show_minutes: int, running: set[str]
) -> list[Slot]:
    """Booked (never started) bookings whose grace period passed without a server."""
    grace = timedelta(minutes=no_show_minutes)
    # a booking shorter than the grace period is a no-show once it is over unused
    return [
        s
        for s in slots
        if s.state == State.BOOKED and min(s.start + grace, s.end) <= now and s.user not in running
    ]


def activations(slots: Iterable[Slot], now: datetime, running: set[str]) -> list[Slot]:
    """Booked bookings that have started while their user's server runs."""
    return [
        s for s in slots if s.state == State.BOOKED and s.start <= now < s.end and s.user in running
    ]


def ending_soon(slots: Iterable[Slot], now: datetime, warn_minutes: int) -> list[Slot]:
    """Active bookings that end within ``warn_minutes`` (their users get a warning)."""
    horizon = now + timedelta(minutes=warn_minutes)
    return [s for s in slots if s.state == State.ACTIVE and now < s.end <= horizon]


def finished(slots: Iterable[Slot], now: datetime) -> list[Slot]:
    """Holding bookings whose end has passed."""
    return [s for s in slots if s.holding and s.end <= now]
