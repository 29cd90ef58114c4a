"""Writes that share one transaction (``Store.batch``, the service's ``WriteBatches``) on
SQLite and a real PostgreSQL: each call in its own savepoint, one commit, a call that fails
leaves nothing and the others stand; later calls see what earlier ones wrote; the queue in
the event loop hands every caller its own answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tests.booking import test_manager as base
from tests.booking.test_manager import ADMIN, ALICE, BOB, NOW, H, book
from werkhub.booking.ledger import LedgerError
from werkhub.booking.manager import BookingManager, Caller
from werkhub.booking.store import Outcome
from werkhub.booking.tables import audit, booking_units, bookings, notifications
from werkhub.service.gates import LedgerGates, WriteBatches

#: the manager on a fresh ledger of test_manager.py, at its fixed clock
clock, manager = base.clock, base.manager


def counts(m: BookingManager) -> tuple[int, ...]:
    with m.read() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(t)).scalar() or 0
            for t in (bookings, booking_units, audit)
        )


def creating(m: BookingManager, who: Caller, start: Any, **kw: Any) -> Callable[[], Any]:
    return lambda: book(m, who, start, **kw)


def test_a_batch_commits_its_calls_and_keeps_nothing_of_a_failed_one(
    manager: BookingManager,
) -> None:
    def half_written() -> None:  # writes a row, then fails: its savepoint is undone
        with manager.write() as conn:
            conn.execute(
                insert(notifications).values(
                    user="alice", kind="x", message="half", at=0.0, read=False
                )
            )
            raise RuntimeError("broken after a write")

    outcomes = manager.batch(
        [
            creating(manager, ALICE, NOW + H, count=2),  # both H100 units
            creating(manager, BOB, NOW + H),  # sees alice's units taken in the same transaction
            half_written,
            creating(manager, BOB, NOW + H, gpu_type="L40S"),
            creating(manager, ALICE, NOW + H, gpu_type="A100"),  # refused before any write
        ]
    )
    ok = [flag for flag, _ in outcomes]
    assert ok == [True, False, False, True, False]
    assert outcomes[0][1]["devices"] == ["a/0", "a/1"]
    assert isinstance(outcomes[1][1], LedgerError) and outcomes[1][1].kind == "conflict"
    assert isinstance(outcomes[2][1], RuntimeError)
    assert outcomes[3][1]["devices"] == ["b/0"]
    assert "unknown GPU type" in str(outcomes[4][1])
    assert counts(manager) == (2, 3, 2)
    with manager.read() as conn:
        assert conn.execute(select(func.count()).select_from(notifications)).scalar() == 0
    # what the batch committed is the ledger's: the next write sees it
    with pytest.raises(LedgerError, match="not free"):
        book(manager, ADMIN, NOW + H, count=1)


def test_a_write_inside_a_write_of_a_batch_is_undone_alone(manager: BookingManager) -> None:
    """Savepoints nest: an inner write that fails is undone, its caller's outer write
    and the batch's other calls stand."""

    def note(conn: Any, message: str) -> None:
        conn.execute(
            insert(notifications).values(
                user="alice", kind="x", message=message, at=0.0, read=False
            )
        )

    def outer_with_a_failed_inner() -> str:
        with manager.write() as conn:
            note(conn, "outer")
            try:
                with manager.write() as inner:
                    note(inner, "inner")
                    raise RuntimeError("the inner write fails")
            except RuntimeError:
                pass
            note(conn, "after")
        return "done"

    outcomes = manager.batch([outer_with_a_failed_inner, creating(manager, BOB, NOW + H)])
    assert [flag for flag, _ in outcomes] == [True, True]
    with manager.read() as conn:
        kept = conn.execute(select(notifications.c.message).order_by(notifications.c.id))
        assert [m for (m,) in kept] == ["outer", "after"]
    assert counts(manager)[:2] == (1, 1)


def test_a_batch_of_one_is_a_plain_write(manager: BookingManager) -> None:
    ((ok, value),) = manager.batch([lambda: book(manager, ALICE, NOW + H)])
    assert ok and value["devices"] == ["a/0"]
    ((ok, value),) = manager.batch([lambda: book(manager, ALICE, NOW - 3 * H)])
    assert not ok and isinstance(value, LedgerError)
    assert counts(manager) == (1, 1, 1)


async def test_queued_writes_share_batches_and_each_caller_gets_its_own_answer(
    manager: BookingManager,
) -> None:
    sizes: list[int] = []

    def run_batch(calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
        sizes.append(len(calls))
        return manager.batch(calls)

    together = WriteBatches(LedgerGates(1), run_batch, limit=8)

    async def one(i: int) -> str:
        who = Caller(f"user{i}")
        try:
            booking, _ = await together.write(
                manager.create, who, who.name, (), "H100", 1, NOW + H, None, timedelta(hours=1)
            )
        except LedgerError as exc:
            return exc.kind
        return booking["devices"][0]

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert sorted(r for r in results if r != "conflict") == ["a/0", "a/1"]
    assert results.count("conflict") == 18
    # all 20 were queued before the first batch began; none arrived while one ran
    assert sizes == [8, 8, 4]
    assert counts(manager) == (2, 2, 2)
    # the queue is empty again: a later write starts a new batch of its own
    assert await one(99) == "conflict"
    assert sizes[-1] == 1


async def test_a_batch_that_fails_as_a_whole_reaches_every_caller(
    manager: BookingManager,
) -> None:
    def broken(calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
        raise OSError("the database went away")

    together = WriteBatches(LedgerGates(1), broken)
    results = await asyncio.gather(
        *(together.write(book, manager, ALICE, NOW + H) for _ in range(3)),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [OSError] * 3
    assert counts(manager) == (0, 0, 0)


async def test_without_batches_each_write_is_its_own_turn(manager: BookingManager) -> None:
    """A limit of one writes alone through the gates; both databases batch."""
    batches: list[int] = []

    def run_batch(calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
        batches.append(len(calls))
        return manager.batch(calls)

    alone = WriteBatches(LedgerGates(2), run_batch, limit=1)
    made = await asyncio.gather(*(alone.write(book, manager, who, NOW + H) for who in (ALICE, BOB)))
    assert sorted(b["devices"][0] for b in made) == ["a/0", "a/1"] and batches == []
    for backend in ("sqlite", "postgresql"):
        assert WriteBatches.for_backend(LedgerGates(1), run_batch, backend).limit > 1
