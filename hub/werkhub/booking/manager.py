"""``BookingManager``: one facade over the booking services, for the callers that want
all of them (the service's routers, the job scheduler, the user purge).

It only builds the services on one shared ``Store`` and hands out their operations:
``Bookings`` (create, get, list, change, cancel, release), ``Waitlist`` (enqueue,
waitlist, cancel_wait), ``Accounting`` (tick, availability, quota, notifications,
mark_read, usage) and ``Servers`` (current, next_for, mark_started, mark_stopped,
mark_cpu_server, active_slots, idle_action). Nothing in ``werkhub.booking`` imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine

from werkhub.booking.accounting import Accounting
from werkhub.booking.bookings import Bookings
from werkhub.booking.servers import Servers
from werkhub.booking.settings import Caller, Settings
from werkhub.booking.store import Store
from werkhub.booking.waitlist import Waitlist

__all__ = ["BookingManager", "Caller", "Settings"]


class BookingManager:
    def __init__(self, writer: Engine, reader: Engine, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(writer, reader)
        self.queue = Waitlist(self.store, settings)
        self.bookings = Bookings(self.store, settings, self.queue)
        self.servers = Servers(self.store, settings, self.queue)
        self.accounting = Accounting(self.store, settings, self.queue, self.servers)
        # bookings
        self.create = self.bookings.create
        self.batch = self.store.batch
        self.get = self.bookings.get
        self.list = self.bookings.list
        self.change = self.bookings.change
        self.cancel = self.bookings.cancel
        self.release = self.bookings.release
        self.check_type = settings.check_type
        # waitlist
        self.enqueue = self.queue.enqueue
        self.waitlist = self.queue.entries
        self.cancel_wait = self.queue.cancel
        # time passing and accounting
        self.tick = self.accounting.tick
        self.availability = self.accounting.availability
        self.free_steps = self.accounting.free_steps
        self.free_steps_at_once = self.accounting.free_steps_at_once
        self.quota = self.accounting.quota
        self.notifications = self.accounting.notifications
        self.mark_read = self.accounting.mark_read
        self.usage = self.accounting.usage
        # servers
        self.current = self.servers.current
        self.next_for = self.servers.next_for
        self.mark_started = self.servers.mark_started
        self.mark_stopped = self.servers.mark_stopped
        self.mark_in_use = self.servers.mark_in_use
        self.mark_cpu_server = self.servers.mark_cpu_server
        self.active_slots = self.servers.active_slots
        self.idle_action = self.servers.idle_action

    @property
    def writer(self) -> Engine:
        return self.store.writer

    @property
    def reader(self) -> Engine:
        return self.store.reader

    @property
    def version(self) -> int:
        """Bumped after every write transaction of this process."""
        return self.store.version

    def write(self) -> AbstractContextManager[Connection]:
        return self.store.write()

    def read(self) -> AbstractContextManager[Connection]:
        return self.store.read()


def _unused(_: Iterator[None]) -> None:  # pragma: no cover
    pass
