"""Admission to the booking ledger: a first-come first-served queue in the event loop in
front of the worker threads.

Every ledger call is CPU work under the GIL. Handed straight to the thread pool, 16 or 64
concurrent requests become as many threads that take turns at the GIL in no particular
order, and with SQLite far worse than that: Python's sqlite3 module lets go of the GIL
for every row it steps through, so each thread waits for the others at every row. Read in
one thread, a week of availability with 100k bookings ran at about 690 queries/s on this
project's 2-core test machine; in 2 threads at 500/s, in 16 at 300/s. Queued here
instead (``asyncio.Semaphore`` wakes waiters in arrival order), at most ``width`` ledger
calls run at once, reads and writes alike, and the rest wait their turn: one on SQLite;
two on PostgreSQL, whose driver lets go of the GIL once per statement while the database
works in its own processes.

:class:`WriteBatches` lets writes that arrive while the ledger is busy share one
transaction on SQLite: each in its own savepoint, one commit (one ``fsync``) for all
(``Store.batch``). A write that finds the ledger idle runs alone and waits for nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from fastapi.concurrency import run_in_threadpool

from werkhub.booking.store import Outcome

P = ParamSpec("P")
R = TypeVar("R")

#: ledger calls in threads at once, per database backend
WIDTH = {"sqlite": 1, "postgresql": 2}


class LedgerGates:
    """One FIFO queue; build it inside the running event loop (the app's lifespan)."""

    def __init__(self, width: int = 1) -> None:
        self.width = width
        self._gate = asyncio.Semaphore(width)

    @classmethod
    def for_backend(cls, backend: str) -> LedgerGates:
        return cls(WIDTH.get(backend, 1))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        async with self._gate:
            return await run_in_threadpool(fn, *args, **kwargs)

    #: the same queue: a write waits behind earlier reads, and the other way round
    write = read


#: most writes sharing one transaction, per database backend (1: each alone). SQLite: one
#: commit (one ``fsync``) for a batch where each create paid its own. PostgreSQL: one
#: BEGIN, advisory lock and commit for the batch instead of three round trips a create,
#: under the lock that serialises them; in two runs of the booking benchmark creates ran
#: at 257-301/s instead of 220/s, p99 80-109 ms against 99-121 ms alone (docs/benchmarks.md;
#: before savepoints were cheap, batches there had a worse tail than single creates)
BATCH_LIMIT = {"sqlite": 32, "postgresql": 32}


class WriteBatches:
    """Writes queued in arrival order and run in batches through ``run_batch`` (the store's
    ``batch``: one transaction, a savepoint each, one commit), each batch one turn of the
    gates. While a batch runs, newcomers wait and form the next one. Build it inside the
    running event loop."""

    def __init__(
        self,
        gates: LedgerGates,
        run_batch: Callable[[Sequence[Callable[[], Any]]], list[Outcome]],
        limit: int = BATCH_LIMIT["sqlite"],
    ) -> None:
        self.gates = gates
        self.run_batch = run_batch
        self.limit = limit
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @classmethod
    def for_backend(
        cls,
        gates: LedgerGates,
        run_batch: Callable[[Sequence[Callable[[], Any]]], list[Outcome]],
        backend: str,
    ) -> WriteBatches:
        return cls(gates, run_batch, BATCH_LIMIT.get(backend, 1))

    async def write(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self.limit <= 1:  # no batches: a write of its own, in the gates' queue
            return await self.gates.write(fn, *args, **kwargs)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((functools.partial(fn, *args, **kwargs), future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                taken, self._pending = self._pending[: self.limit], self._pending[self.limit :]
                try:
                    outcomes = await self.gates.write(self.run_batch, [call for call, _ in taken])
                except Exception as exc:  # the batch as a whole failed: each caller hears it
                    outcomes = [(False, exc)] * len(taken)
                for (_, future), (ok, value) in zip(taken, outcomes, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._drainer = None
