"""A count of the ledger's commits on PostgreSQL, from its notifications (migration 0015).

SQLite answers "did anyone commit since?" with ``PRAGMA data_version``, a call into the
library. PostgreSQL has no such thing short of a query, a round trip to the database's
own process. Instead, the trigger that journals ``booking_units`` notifies channel
``werkhub_ledger``, and a thread of this process listens on a connection of its own and
counts what arrives. A reader notes the count before it syncs with the journal; when the
count has not moved, nothing was committed since, by this process or any other.

A commit is counted when its notification arrives, a fraction of a millisecond after the
commit on the same host. Until the listener is connected, and whenever it lost its
connection, every look counts as a change, so a reader falls back to the journal's query.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import Engine

log = logging.getLogger(__name__)

CHANNEL = "werkhub_ledger"
#: how long the listener waits for notifications before it checks whether it should stop
POLL_SECONDS = 1.0
#: wait before connecting again after the connection was lost
RETRY_SECONDS = 1.0


@dataclass
class _Shared:
    """What the listening thread and the counter share (the thread holds only this, so
    the counter can be collected and the thread told to stop)."""

    count: int = 0
    live: bool = False
    stop: threading.Event = field(default_factory=threading.Event)


class CommitListener:
    """Callable: a number that moves with every committed change of ``booking_units``.
    The listening thread starts at the first call and stops when this object is gone."""

    def __init__(self, engine: Engine) -> None:
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._shared = _Shared()
        self._started = False
        self._start_lock = threading.Lock()

    def __call__(self) -> int:
        shared = self._shared
        if not self._started:
            self._start()
        if not shared.live:
            shared.count += 1  # not listening: nothing can be taken as unchanged
        return shared.count

    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            thread = threading.Thread(
                target=_listen, args=(self._dsn, self._shared), name="werkhub-ledger-listen"
            )
            thread.daemon = True
            thread.start()
            weakref.finalize(self, self._shared.stop.set)
            self._started = True


def _listen(dsn: str, shared: _Shared) -> None:
    while not shared.stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                shared.live = True
                shared.count += 1  # what was committed before LISTEN was not counted
                while not shared.stop.is_set():
                    for _ in conn.notifies(timeout=POLL_SECONDS):
                        shared.count += 1
        except psycopg.Error as exc:
            if not shared.stop.is_set():
                log.warning("listening for ledger commits failed (%s); connecting again", exc)
        finally:
            shared.live = False
            shared.count += 1
        shared.stop.wait(RETRY_SECONDS)
