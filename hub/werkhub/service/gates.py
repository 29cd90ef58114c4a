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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from fastapi.concurrency import run_in_threadpool

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
