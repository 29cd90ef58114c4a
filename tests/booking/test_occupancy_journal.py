"""Availability from each process's occupancy in memory (``werkhub.booking.journal``) on a
real database: a second manager on the same database (another process: a second service,
the command line) sees every write of the first at its next query, with no time to live;
rows changed behind the ledger's back are seen too; a process that fell behind the
journal's pruning loads anew. Every answer is checked against the rows themselves."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, event, func, select, text, update

from werkhub.booking import journal, ledger, rows
from werkhub.booking.ledger import LedgerError, Unit
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.booking.tables import booking_units, bookings, ledger_journal
from werkhub.db import make_engines, upgrade

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
UNITS = tuple(
    [Unit(id=f"a/{i}", node="a", gpu_type="H100", index=i) for i in range(3)]
    + [Unit(id="b/0", node="b", gpu_type="L40S", index=0)]
)
ROOT = Caller("root", admin=True)
WEEK = 7 * 24 * H


@pytest.fixture
def pair(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BookingManager]]:
    """Two managers on one database, each with its own engines and occupancy."""
    monkeypatch.setattr(ledger, "utcnow", lambda: NOW)
    upgrade(db_url)
    settings = Settings(UNITS, PolicySet(default=Policy()), ZoneInfo("UTC"))
    engines = [make_engines(db_url) for _ in range(2)]
    yield [BookingManager(w, r, settings) for w, r in engines]
    for writer, reader in engines:
        writer.dispose()
        reader.dispose()


def free(m: BookingManager, start: datetime = NOW, step: timedelta = H) -> list[int]:
    return [s["free"] for s in m.availability("H100", start, start + WEEK, step)]


def from_rows(m: BookingManager, start: datetime = NOW, step: timedelta = H) -> list[int]:
    """The same answer read from the rows, as availability was answered before."""
    lo, hi = rows.to_min(start), rows.to_min(start + WEEK)
    with m.read() as conn:
        spans = conn.execute(
            select(booking_units.c.unit, booking_units.c.start_min, booking_units.c.end_min).where(
                booking_units.c.gpu_type == "H100", booking_units.c.holding.is_(True)
            )
        ).all()
    minutes = int(step.total_seconds() // 60)
    return [3 - n for n in ledger.busy_per_step(spans, lo, hi, minutes)]  # type: ignore[arg-type]


def book(m: BookingManager, start: datetime, hours: float, count: int = 1) -> int:
    booking, _ = m.create(
        ROOT, "alice", (), "H100", count, start, None, timedelta(hours=hours), override=True
    )
    return booking["id"]


def test_another_process_sees_each_write_at_its_next_query(pair) -> None:
    one, two = pair
    assert free(one) == free(two) == [3] * 168
    first = book(one, NOW + 2 * H, 3, count=2)
    assert free(two)[:6] == [3, 3, 1, 1, 1, 3]  # at once: no time to live
    one.change(ROOT, first, (), end=NOW + 4 * H, override=True)
    assert free(two)[:6] == [3, 3, 1, 1, 3, 3]
    later = book(two, NOW + 3 * H, 1)
    assert free(one)[:6] == [3, 3, 1, 0, 3, 3]
    one.cancel(ROOT, later)
    assert free(two)[:6] == free(one)[:6] == [3, 3, 1, 1, 3, 3]
    # a row changed behind the ledger's back (an operator's SQL): the trigger notes it too
    with one.writer.begin() as conn:
        conn.execute(update(booking_units).values(holding=False))
    assert free(two) == free(one) == [3] * 168


def test_random_writes_agree_with_the_rows(pair) -> None:
    one, two = pair
    rng = random.Random(7)
    made: list[int] = []
    for k in range(60):
        m = pair[k % 2]
        action = rng.random()
        try:
            if action < 0.6 or not made:
                made.append(book(m, NOW + rng.randrange(0, 160) * H / 2, rng.choice([0.5, 1, 5])))
            elif action < 0.8:
                m.cancel(ROOT, made.pop(rng.randrange(len(made))))
            else:
                booking = made[rng.randrange(len(made))]
                m.change(ROOT, booking, (), end=NOW + rng.randrange(170, 200) * H, override=True)
        except LedgerError:
            continue  # a conflict or a state that allows no change: nothing written
        if k % 5 == 0:
            for step in (H, timedelta(minutes=15), timedelta(minutes=45)):
                start = NOW + rng.randrange(0, 8) * timedelta(minutes=20)
                assert (
                    free(one, start, step) == free(two, start, step) == from_rows(one, start, step)
                )
    with one.read() as conn:
        assert conn.scalar(select(func.count()).select_from(bookings)) > 10


def test_a_process_behind_the_pruned_journal_loads_anew(pair, monkeypatch) -> None:
    one, two = pair
    assert free(two) == [3] * 168  # two has looked: it knows the journal's newest entry
    monkeypatch.setattr(journal, "KEEP", 2)
    for hour in range(6):
        book(one, NOW + hour * H, 1)
    monkeypatch.setattr(journal, "PRUNE_BATCH", 3)
    with one.read() as conn:
        before = conn.scalar(select(func.count()).select_from(ledger_journal))
    one.tick(set())  # prunes the journal's oldest entries, PRUNE_BATCH at a time ...
    with one.read() as conn:
        assert conn.scalar(select(func.count()).select_from(ledger_journal)) == before - 3
    for _ in range(before):
        one.tick(set())
    with one.read() as conn:  # ... down to the newest KEEP
        kept = conn.scalar(select(func.count()).select_from(ledger_journal))
    assert kept == 2
    assert free(two)[:7] == [2, 2, 2, 2, 2, 2, 3] == from_rows(two)[:7]
    # and rows deleted (a purge) leave no stale span behind
    with one.writer.begin() as conn:
        conn.execute(delete(booking_units))
    assert free(two) == free(one) == [3] * 168


def test_answers_at_once_only_when_quick(pair, monkeypatch) -> None:
    """What the service answers in its event loop: the same numbers as ``free_steps``, and
    None (a worker thread's job) for a type not loaded yet or many new journal entries."""
    one, two = pair
    window = ("H100", NOW, NOW + WEEK, H)
    if one.store.postgres:  # the journal's bounds are a round trip: always a thread's job
        one.free_steps(*window)
        book(two, NOW + H, 2)
        assert one.free_steps_at_once(*window) is None
        assert one.free_steps(*window)[2][:4] == [3, 2, 2, 3]
        return
    assert one.free_steps_at_once(*window) is None  # not loaded
    assert one.free_steps(*window) == (rows.to_min(NOW), 60, [3] * 168)
    book(two, NOW + H, 2)
    assert one.free_steps_at_once(*window) == one.free_steps(*window)
    assert one.free_steps_at_once(*window)[2][:4] == [3, 2, 2, 3]
    monkeypatch.setattr(journal, "AT_ONCE", 1)
    book(two, NOW + 5 * H, 1)
    book(two, NOW + 6 * H, 1)
    assert one.free_steps_at_once(*window) is None  # two new entries: more than AT_ONCE
    assert one.free_steps(*window)[2][:8] == [3, 2, 2, 3, 3, 2, 2, 3]
    with pytest.raises(LedgerError):
        one.free_steps_at_once("H100", NOW, NOW - H, H)


def test_sqlite_answers_from_memory_until_anyone_commits(pair) -> None:
    """On SQLite a query with nothing committed since the last one runs no statement at
    all (``PRAGMA data_version`` says so); a commit by the other manager, by this one, or
    behind the ledger's back is seen at the next query."""
    one, two = pair
    if one.store.postgres:
        pytest.skip("PostgreSQL's counter is its notifications (the test below)")
    statements: list[str] = []
    event.listen(one.reader, "before_cursor_execute", lambda *a: statements.append(a[2]))
    window = ("H100", NOW, NOW + WEEK, H)
    assert one.free_steps_at_once(*window) is None  # not loaded; syncs note the counter now
    one.free_steps(*window)  # loads the type
    statements.clear()
    assert one.free_steps_at_once(*window)[2][:3] == [3, 3, 3]
    assert one.free_steps_at_once(*window) == one.free_steps_at_once(*window)
    assert statements == []
    book(two, NOW + H, 1, count=2)  # another process
    assert one.free_steps_at_once(*window)[2][:3] == [3, 1, 3]
    assert statements  # the journal was read
    statements.clear()
    assert one.free_steps_at_once(*window)[2][:3] == [3, 1, 3]
    assert statements == []
    book(one, NOW + 2 * H, 1)  # this process's own writer
    assert one.free_steps_at_once(*window)[2][:3] == [3, 1, 2]
    with two.writer.begin() as conn:  # behind the ledger's back
        conn.execute(update(booking_units).values(holding=False))
    assert one.free_steps_at_once(*window)[2][:3] == [3, 3, 3] == from_rows(one)[:3]


def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def test_postgres_answers_from_memory_until_a_commit_is_notified(pair) -> None:
    """On PostgreSQL the ledger's trigger notifies every commit (migration 0015) and a
    listening thread counts them: with nothing notified, a query runs no statement; a
    commit of another manager, or one behind the ledger's back, makes the next quick
    answer step aside (None: the journal is read in a worker thread). A listener whose
    connection was cut connects again, and meanwhile nothing is taken as unchanged."""
    one, two = pair
    if not one.store.postgres:
        pytest.skip("SQLite's counter is PRAGMA data_version (the test above)")
    statements: list[str] = []
    event.listen(one.reader, "before_cursor_execute", lambda *a: statements.append(a[2]))
    window = ("H100", NOW, NOW + WEEK, H)

    def quick() -> list[int] | None:
        answer = one.free_steps_at_once(*window)
        return None if answer is None else answer[2][:3]

    def synced_and_quick() -> bool:
        one.free_steps(*window)  # the worker thread's path: reads the journal
        return quick() is not None

    assert quick() is None  # not loaded; the listener starts
    _until(synced_and_quick)
    statements.clear()
    assert quick() == [3, 3, 3] and quick() == [3, 3, 3]
    assert statements == []
    book(two, NOW + H, 1, count=2)  # another process
    _until(lambda: quick() is None)  # notified: no statement was needed to know
    assert statements == []
    assert one.free_steps(*window)[2][:3] == [3, 1, 3]
    assert quick() == [3, 1, 3]
    with two.writer.begin() as conn:  # behind the ledger's back
        conn.execute(update(booking_units).values(holding=False))
    _until(lambda: quick() is None)
    assert one.free_steps(*window)[2][:3] == [3, 3, 3] == from_rows(one)[:3]
    # the listener's connection is cut: nothing counts as unchanged until it is back
    with two.writer.begin() as conn:
        cut = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = 'LISTEN werkhub_ledger' AND pid <> pg_backend_pid()"
            )
        ).all()
    assert cut
    _until(lambda: quick() is None)
    book(two, NOW + 3 * H, 1)  # while it may still be away
    _until(synced_and_quick)
    assert quick() == [3, 3, 3, 2][:3] and one.free_steps(*window)[2][3] == 2
