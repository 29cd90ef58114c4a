"""The replay: people's requests through werkhub's real ``BookingManager`` on a real
database, with a simulated clock (``werkhub.booking.ledger.utcnow``; nothing sleeps).

Event-driven: the clock jumps to the next minute at which something happens, and there
the replay does what the people and the service would do, in this order:

1. tasks that end: the person releases the booking (``release``) and stops the server, or
   leaves it up and idle (``Mode.release_at_end`` off: nobody releases; those who would
   have stop their server and keep the booking);
2. booking requests: ``create``; a 409 joins the waitlist (``enqueue``);
3. servers that start at their booking's start: ``mark_started`` (the spawner's call);
4. ``tick(running)`` as ``tick_forever`` does; servers whose booking ended are stopped;
5. the idle detector, as ``watch_idle`` does (``idlefeed``), when a booking may be idle.

Whenever the waitlist may have been served, granted entries become bookings whose people
start at the granted start. Events of one minute happen at that minute; the service's
tick every 30 s would see the same states, since nothing changes between events.
"""

from __future__ import annotations

import heapq
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, select, text

from tracesim.assumptions import Assumptions
from tracesim.idlefeed import IdleFeed
from tracesim.workload import Request, Workload
from werkhub.booking import ledger
from werkhub.booking.idle import IdlePolicy
from werkhub.booking.ledger import LedgerError
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.booking.tables import bookings, waitlist
from werkhub.db import make_engines, upgrade

#: trace second 0 (the trace publishes no date; a Monday)
BASE = datetime(2026, 1, 5, tzinfo=UTC)
END, REQUEST, START, TICK, IDLE = range(5)
#: no-show grace that never frees a booking before its end (the no-release baseline)
NEVER = 10**7


@dataclass(frozen=True)
class Mode:
    name: str
    #: people who release when done do so at their task's end
    release_at_end: bool
    #: the idle detector releases bookings idle for ``idle_minutes``
    idle_release: bool
    #: a booking without a server is freed ``no_show_minutes`` after its start
    no_show_release: bool
    #: run the detector over every active booking at every grid minute (tests compare it
    #: with the default, which runs it only when a booking may have become idle)
    dense_idle: bool = False


WERKHUB = Mode("werkhub", release_at_end=True, idle_release=True, no_show_release=True)
NO_RELEASE = Mode(
    "bookings, no release", release_at_end=False, idle_release=False, no_show_release=False
)


@dataclass
class Person:
    """One request's person and what the replay did for them (minutes since trace start)."""

    req: Request
    index: int
    booking: int | None = None
    entry: int | None = None
    start: int | None = None
    end: int | None = None
    via_waitlist: bool = False
    refused: str | None = None
    up: bool = False
    task_end: int | None = None
    #: when the ledger should stop holding the devices, by the replay's own reckoning
    held_until: int | None = None
    #: from this minute on the GPUs stay quiet while the booking is active
    idle_from: int | None = None
    busy: int = 0
    cut: bool = False

    @property
    def served(self) -> bool:
        return self.booking is not None


@dataclass
class Outcome:
    mode: Mode
    people: list[Person]
    manager: BookingManager
    stats: dict[str, float] = field(default_factory=dict)


def to_min(moment: datetime) -> int:
    return int((moment - BASE).total_seconds() // 60)


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


def settings_for(units: tuple, a: Assumptions, mode: Mode) -> Settings:
    policy = Policy(
        gpu_hours_per_week=a.gpu_hours_per_week,
        max_booking_hours=a.max_booking_hours,
        max_advance_days=a.max_advance_days,
        max_concurrent_gpus=a.max_concurrent_gpus,
    )
    idle = IdlePolicy(
        threshold_percent=a.idle_threshold,
        idle_minutes=a.idle_minutes,
        action="release" if mode.idle_release else "report",
        sample_interval_seconds=60 * a.sample_minutes,
    )
    return Settings(
        units=units,
        policies=PolicySet(default=policy),
        tz=ZoneInfo("UTC"),
        no_show_minutes=a.no_show_minutes if mode.no_show_release else NEVER,
        idle=idle,
    )


@contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    """An empty werkhub database: a new SQLite file (in /dev/shm when there is one), or the
    PostgreSQL database at ``url`` with its schema dropped and made anew."""
    if url is not None and url.startswith("postgresql"):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        upgrade(url)
        yield url
        return
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        made = url or f"sqlite:///{Path(folder) / 'trace.sqlite'}"
        upgrade(made)
        yield made


@contextmanager
def simulated_clock(clock: list[datetime]) -> Iterator[None]:
    """``ledger.utcnow`` reads ``clock[0]`` for the duration."""
    original = ledger.utcnow
    ledger.utcnow = lambda: clock[0]  # type: ignore[assignment]
    try:
        yield
    finally:
        ledger.utcnow = original  # type: ignore[assignment]


class Replay:
    def __init__(self, workload: Workload, a: Assumptions, mode: Mode, db_url: str) -> None:
        self.a = a
        self.mode = mode
        writer, reader = make_engines(db_url)
        self.m = BookingManager(writer, reader, settings_for(workload.units, a, mode))
        self.people = [Person(r, i) for i, r in enumerate(workload.requests)]
        self.by_user = {p.req.user: p for p in self.people}
        self.by_booking: dict[int, Person] = {}
        self.pending: dict[int, Person] = {}
        self.running: set[str] = set()
        self.watch: set[int] = set()  # bookings the idle detector may find idle
        self.heap: list[tuple[int, int, int, int]] = []
        self.idle_at: set[int] = set()
        self.seq = 0
        self.clock = [BASE]
        self.step = a.sample_minutes
        self.window = a.idle_minutes
        self.feed = IdleFeed(self.m.settings.idle, self.step, BASE, self._util, to_min)
        self.stats: dict[str, float] = {"ticks": 0, "idle_checks": 0, "event_minutes": 0}
        self.stats["max_wait_min"] = round(a.max_wait_hours * 60)
        for i, p in enumerate(self.people):
            self._push(p.req.asked, REQUEST, i)

    # ---- events ------------------------------------------------------------------------
    def _push(self, minute: int, phase: int, index: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (minute, phase, self.seq, index))

    def _push_idle(self, minute: int) -> None:
        if minute not in self.idle_at:
            self.idle_at.add(minute)
            self._push(minute, IDLE, -1)

    def run(self) -> Outcome:
        began = time.perf_counter()
        with simulated_clock(self.clock):
            while self.heap:
                minute = self.heap[0][0]
                batch: dict[int, list[int]] = {}
                while self.heap and self.heap[0][0] == minute:
                    _, phase, _, index = heapq.heappop(self.heap)
                    batch.setdefault(phase, []).append(index)
                self.clock[0] = at(minute)
                self.stats["event_minutes"] += 1
                self._minute(minute, batch)
            for p in self.pending.values():
                p.refused = "still on the waitlist at the end"
        self._settle()
        self.stats["wall_s"] = time.perf_counter() - began
        self.stats["samples"] = self.feed.made
        return Outcome(self.mode, self.people, self.m, self.stats)

    def _minute(self, minute: int, batch: dict[int, list[int]]) -> None:
        for i in batch.get(END, ()):
            self._task_end(self.people[i], minute)
        for i in batch.get(REQUEST, ()):
            self._request(self.people[i], minute)
        for i in batch.get(START, ()):
            self._start(self.people[i], minute)
        self._poll()
        self._tick(minute)
        if IDLE in batch or (self.mode.dense_idle and self.running):
            self.idle_at.discard(minute)
            self._idle(minute)
        self._poll()
        if self.mode.dense_idle and self.running:
            self._push_idle(minute + self.step - minute % self.step)

    # ---- what people do ----------------------------------------------------------------
    def _request(self, p: Person, minute: int) -> None:
        r = p.req
        caller = Caller(r.user)
        start = None if r.desired <= minute else at(r.desired)
        length = timedelta(minutes=r.booked)
        try:
            view, _ = self.m.create(caller, r.user, (), r.gpu_type, r.count, start, None, length)
        except LedgerError as exc:
            if exc.kind != "conflict":
                p.refused = f"{exc.kind}: {exc.message}"
                return
        else:
            self._granted(p, view["id"], to_min(view["start"]), to_min(view["end"]))
            return
        latest = at(r.desired + round(self.a.max_wait_hours * 60))
        try:
            entry = self.m.enqueue(
                caller, r.user, r.gpu_type, r.count, at(r.desired), length, latest
            )
        except LedgerError as exc:
            p.refused = f"{exc.kind}: {exc.message}"
            return
        p.entry = entry["id"]
        self.pending[entry["id"]] = p
        self._poll()

    def _granted(self, p: Person, booking_id: int, start: int, end: int) -> None:
        p.booking, p.start, p.end = booking_id, start, end
        self.by_booking[booking_id] = p
        index = p.index
        if p.req.phantom:
            grace = self.a.no_show_minutes
            self._push(min(start + grace, end) if self.mode.no_show_release else end, TICK, index)
        else:
            self._push(start, START, index)
        self._push(end, TICK, index)

    def _start(self, p: Person, minute: int) -> None:
        if p.booking is None or p.held_until is not None or p.up:
            return
        self.m.mark_started(p.booking)
        p.up = True
        self.running.add(p.req.user)
        p.task_end = minute + p.req.run
        self._push(p.task_end, END, p.index)
        if self.mode.idle_release and p.req.util * 100 < self.a.idle_threshold:
            self._watch(p, minute)  # quiet even while the task runs

    def _stop(self, p: Person) -> None:
        if p.up:
            assert p.booking is not None
            self.m.mark_stopped(p.booking)
            self.running.discard(p.req.user)
            p.up = False

    def _task_end(self, p: Person, minute: int) -> None:
        if p.held_until is not None:  # released while the task ran (idle detector)
            return
        assert p.booking is not None and p.start is not None
        p.busy = minute - p.start
        if p.req.releases:
            self._stop(p)
            if self.mode.release_at_end:
                self.m.release(Caller(p.req.user), p.booking)
                p.held_until = minute
                self.watch.discard(p.booking)
        elif self.mode.idle_release and p.idle_from is None:
            self._watch(p, minute)

    def _watch(self, p: Person, quiet_from: int) -> None:
        """The person's GPUs stay quiet from ``quiet_from``: the detector cannot call them
        idle before a whole window of quiet samples lies behind it."""
        assert p.booking is not None and p.end is not None
        p.idle_from = quiet_from
        first = quiet_from + self.window - self.step
        if first < p.end:
            self.watch.add(p.booking)
            self._push_idle(first + (-first % self.step))

    def _util(self, booking_id: int, minute: int) -> float:
        p = self.by_booking[booking_id]
        if p.start is None or p.task_end is None or not p.start <= minute < p.task_end:
            return 0.0
        if p.cut and p.held_until is not None and minute >= p.held_until:
            return 0.0
        return 100.0 * p.req.util

    # ---- what the service does ---------------------------------------------------------
    def _tick(self, minute: int) -> None:
        result = self.m.tick(set(self.running))
        self.stats["ticks"] += 1
        for user, booking_id in result["ended_running"]:
            p = self.by_user[user]
            self.m.mark_stopped(booking_id)
            self.running.discard(user)
            p.up = False
            self.watch.discard(booking_id)

    def _idle(self, minute: int) -> None:
        active = self.m.active_slots()
        if self.mode.dense_idle:
            chosen = active
        else:
            chosen = [
                s
                for s in active
                if s.id in self.watch
                and minute >= (self.by_booking[s.id].idle_from or 0) + self.window - self.step
            ]
        if chosen:
            self.stats["idle_checks"] += 1
            verdicts = self.feed.verdicts(chosen, minute)
            for slot in chosen:
                verdict = verdicts[slot.id]
                p = self.by_booking[slot.id]
                if verdict.action == "none":
                    if slot.id in self.watch and minute + self.step < (p.end or 0):
                        self._push_idle(minute + self.step)
                    continue
                acted = self.m.idle_action(slot.id, verdict)
                if acted and verdict.action == "release":
                    p.held_until = minute
                    self.watch.discard(slot.id)
                    if p.task_end is not None and minute < p.task_end:
                        p.busy, p.cut = minute - (p.start or 0), True
                    self._stop(p)
        self.feed.forget({u for s in active for u in s.devices})

    def _poll(self) -> None:
        """Waitlist entries that were granted (or expired) since the last look."""
        if not self.pending:
            return
        query = select(waitlist.c.id, waitlist.c.state, waitlist.c.booking_id).where(
            waitlist.c.id.in_(list(self.pending)), waitlist.c.state != "waiting"
        )
        with self.m.read() as conn:
            done = conn.execute(query).all()
            for entry_id, state, booking_id in done:
                p = self.pending.pop(entry_id)
                if state != "granted":
                    p.refused = f"waitlist entry {state}"
                    continue
                row = conn.execute(
                    select(bookings.c.start_min, bookings.c.end_min).where(
                        bookings.c.id == booking_id
                    )
                ).one()
                p.via_waitlist = True
                start, end = row.start_min - to_min_epoch(), row.end_min - to_min_epoch()
                self._granted(p, booking_id, start, end)

    def _settle(self) -> None:
        """Where the replay expects the ledger to have stopped holding each booking."""
        grace = self.a.no_show_minutes
        for p in self.people:
            if p.booking is None or p.held_until is not None:
                continue
            assert p.start is not None and p.end is not None
            if p.req.phantom and self.mode.no_show_release:
                p.held_until = min(p.start + grace, p.end)
            else:
                p.held_until = p.end
            if not p.req.phantom and p.task_end is not None and not p.busy:
                p.busy = min(p.task_end, p.end) - p.start


def to_min_epoch() -> int:
    """Minutes from the Unix epoch to ``BASE`` (the ledger stores epoch minutes)."""
    return int(BASE.timestamp() // 60)


def replay(workload: Workload, a: Assumptions, mode: Mode, db_url: str) -> Outcome:
    return Replay(workload, a, mode, db_url).run()


def describe_mode(mode: Mode) -> dict[str, Any]:
    return {
        "early release at task end": mode.release_at_end,
        "idle release": mode.idle_release,
        "no-show release": mode.no_show_release,
    }
