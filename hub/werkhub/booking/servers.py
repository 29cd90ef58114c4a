"""Where bookings meet user servers, the one place.

``Servers`` is what the spawners need from the ledger (through the service's spawn
endpoints): the booking a server gets, when the server with its devices starts and stops
(GPU time used), which servers outlived their booking, and what an idle GPU costs its
booking. ``ServerControl`` acts on the servers themselves through the hub's REST API:
stop a server whose booking ended, or restart it without GPUs, or onto a booking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy import Connection, delete, insert, select

from werkhub.booking import ledger, reads, rows, writes
from werkhub.booking.idle import Verdict
from werkhub.booking.ledger import HOLDING, NotFound, Slot, State
from werkhub.booking.settings import Settings
from werkhub.booking.store import Store
from werkhub.booking.tables import audit, bookings, server_bookings
from werkhub.booking.waitlist import Waitlist
from werkhub.errors import Relayed

log = logging.getLogger("werkhub.booking.servers")


class Servers:
    def __init__(self, store: Store, settings: Settings, waitlist: Waitlist) -> None:
        self.store = store
        self.settings = settings
        self.waitlist = waitlist

    def _first(self, *conditions: Any) -> dict[str, Any] | None:
        with self.store.read() as conn:
            row = (
                conn.execute(select(bookings).where(*conditions).order_by(bookings.c.start_min))
                .mappings()
                .first()
            )
            return reads.view(conn, dict(row), self.settings.simulated_ids) if row else None

    def current(self, user: str, booking_id: int | None = None) -> dict[str, Any] | None:
        """The user's booking that holds devices right now (or the one asked for)."""
        minute = rows.to_min(ledger.utcnow())
        conditions = [
            bookings.c.user == user,
            bookings.c.state.in_([s.value for s in HOLDING]),
            bookings.c.start_min <= minute,
            bookings.c.end_min > minute,
        ]
        if booking_id is not None:
            conditions.append(bookings.c.id == booking_id)
        return self._first(*conditions)

    def next_for(self, user: str) -> dict[str, Any] | None:
        """The user's next booking that has not started yet."""
        return self._first(
            bookings.c.user == user,
            bookings.c.state == State.BOOKED.value,
            bookings.c.start_min > rows.to_min(ledger.utcnow()),
        )

    def mark_started(self, booking_id: int) -> dict[str, Any]:
        """The user's server now runs with this booking's devices."""
        with self.store.write() as conn:
            row = reads.row(conn, booking_id)
            if row is None:
                raise NotFound(f"no booking {booking_id}")
            _activate(conn, row, "werkhub-spawner")
            # remembered even when the booking ended meanwhile: the tick then ends the server
            conn.execute(delete(server_bookings).where(server_bookings.c.user == row["user"]))
            conn.execute(
                insert(server_bookings).values(
                    user=row["user"], booking_id=booking_id, since=ledger.now_ts()
                )
            )
            return reads.view(conn, reads.row(conn, booking_id) or {}, self.settings.simulated_ids)

    def mark_in_use(self, booking_id: int, actor: str) -> dict[str, Any]:
        """A booking's devices are now used by something other than the owner's notebook
        server (a model endpoint): active, its usage counted; the server is untouched."""
        with self.store.write() as conn:
            row = reads.row(conn, booking_id)
            if row is None:
                raise NotFound(f"no booking {booking_id}")
            _activate(conn, row, actor)
            return reads.view(conn, reads.row(conn, booking_id) or {}, self.settings.simulated_ids)

    def mark_stopped(self, booking_id: int) -> None:
        with self.store.write() as conn:
            writes.close_usage(conn, booking_id, ledger.now_ts())
            conn.execute(delete(server_bookings).where(server_bookings.c.booking_id == booking_id))

    def end_failed(self, user: str, booking_id: int) -> None:
        """Ending ``user``'s server after its booking failed (the hub did not answer, the
        stop did not finish): the next tick reports it again, unless the server has since
        started anew (with other devices or none)."""
        with self.store.write() as conn:
            mine = server_bookings.c.user == user
            if conn.execute(select(server_bookings.c.user).where(mine)).first() is not None:
                return
            conn.execute(
                insert(server_bookings).values(
                    user=user, booking_id=booking_id, since=ledger.now_ts()
                )
            )

    def mark_cpu_server(self, user: str) -> None:
        """The user's server starts without devices: it runs on no booking.

        Most CPU starts have nothing to forget: they only read, so a burst of CPU spawns
        does not queue behind the single SQLite writer (nor bump the read caches)."""
        mine = server_bookings.c.user == user
        with self.store.read() as conn:
            if conn.execute(select(server_bookings.c.user).where(mine).limit(1)).first() is None:
                return
        with self.store.write() as conn:
            conn.execute(delete(server_bookings).where(mine))

    def past_their_booking(self, conn: Connection, running: set[str]) -> list[tuple[str, int]]:
        """Inside a write transaction: (user, booking id) of running servers whose booking
        no longer holds devices; each is reported once (``end_failed`` reports it again)."""
        found = conn.execute(
            select(server_bookings.c.user, server_bookings.c.booking_id)
            .join(bookings, bookings.c.id == server_bookings.c.booking_id)
            .where(bookings.c.state.not_in([s.value for s in HOLDING]))
        ).all()
        late = []
        for user, booking_id in found:
            if user not in running:
                continue  # still starting (or gone without a stop): looked at next tick
            late.append((user, booking_id))
            conn.execute(delete(server_bookings).where(server_bookings.c.user == user))
        return late

    def active_slots(self) -> list[Slot]:
        """Active bookings of people's servers and jobs, which the idle detector watches;
        a model endpoint's GPUs go back by its own scale-to-zero instead, a federation
        run's at the run's end."""
        with self.store.read() as conn:
            return reads.slots(
                conn,
                (bookings.c.state == State.ACTIVE.value)
                & bookings.c.kind.not_in(("endpoint", "federation")),
            )

    def idle_action(self, booking_id: int, verdict: Verdict) -> bool:
        """Report an idle booking to its user once per idle streak, and release it when the
        idle policy says so. Returns whether anything was done."""
        since = verdict.idle_since.isoformat() if verdict.idle_since else ""
        now = ledger.utcnow()
        with self.store.write() as conn:
            row = reads.row(conn, booking_id)
            if row is None or row["state"] != State.ACTIVE.value:
                return False
            trail = conn.execute(
                select(audit.c.detail).where(
                    audit.c.booking_id == booking_id, audit.c.action == "idle"
                )
            ).scalars()
            if any(d.get("idle_since") == since for d in trail):
                return False
            writes.record(
                conn, booking_id, "werkhub", "idle", idle_since=since, verdict=verdict.action
            )
            local = verdict.idle_since.astimezone(self.settings.tz) if verdict.idle_since else now
            release = verdict.action == "release"
            writes.notify(
                conn,
                row["user"],
                "gpu_idle",
                f"The GPU(s) of booking {booking_id} have been idle since {local:%H:%M}"
                + (
                    "; they were released for others."
                    if release
                    else ": release the booking if you no longer need them."
                ),
                booking_id,
            )
            if release:
                end = writes.release(conn, row, now)
                # the idle watcher ends this server itself
                conn.execute(
                    delete(server_bookings).where(server_bookings.c.booking_id == booking_id)
                )
                writes.record(conn, booking_id, "werkhub", "idle_release", end=end)
                self.waitlist.serve(conn, now)
            return True


class HubReply(Protocol):
    status_code: int
    text: str

    def json(self) -> Any: ...


class HubApi(Protocol):
    """What ``ServerControl`` needs of a hub client (``werkhub.auth.hub.HubAuthenticator``)."""

    async def hub_request(self, method: str, path: str, body: Any = None) -> HubReply: ...

    async def user_details(self, name: str) -> dict[str, Any] | None: ...

    def forget(self, name: str) -> None: ...


class ServerError(Relayed):
    """The hub refused to start a server; ``status`` is the hub's HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.message = message


class ServerControl:
    """Stops and restarts users' default servers through the hub (the service's hub role
    has the ``servers`` scope). The home folder or volume keeps the files."""

    def __init__(self, hub: HubApi, poll: float = 0.5) -> None:
        self.hub = hub
        self.poll = poll

    @staticmethod
    def _path(name: str) -> str:
        return f"/users/{quote(name, safe='')}"

    async def _stop(self, name: str, wait: float) -> None:
        """Stop the server (its record stays) and wait up to ``wait`` s until it is gone;
        ``ServerError`` when the hub refuses the stop or the server is still there."""
        reply = await self.hub.hub_request(
            "DELETE", f"{self._path(name)}/server", {"remove": False}
        )
        if reply.status_code >= 400 and reply.status_code != 404:
            raise ServerError(reply.status_code, f"the hub did not stop {name}'s server")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reply = await self.hub.hub_request("GET", self._path(name))
            if reply.status_code == 404 or not (reply.json().get("servers") or {}).get(""):
                return
            await asyncio.sleep(self.poll)
        raise ServerError(504, f"{name}'s server did not stop within {wait:.0f} s")

    async def end_gpu_server(self, name: str, downgrade: bool) -> None:
        """A booking ended: stop the user's server, or restart it CPU-only with the same
        image."""
        details = await self.hub.user_details(name) or {}
        server = (details.get("servers") or {}).get("") or {}
        options = dict(server.get("user_options") or {})
        if not downgrade:
            reply = await self.hub.hub_request(
                "DELETE", f"{self._path(name)}/server", {"remove": False}
            )
            if reply.status_code >= 400 and reply.status_code != 404:
                raise ServerError(reply.status_code, f"the hub did not stop {name}'s server")
            return
        options.pop("booking_id", None)
        options.update({"gpu": "cpu"})
        await self._stop(name, wait=300)
        reply = await self.hub.hub_request("POST", f"{self._path(name)}/server", options)
        self.hub.forget(name)
        if reply.status_code >= 400:
            log.warning("%s's server did not restart CPU-only: %s", name, reply.text)

    async def restart(self, name: str, options: dict[str, Any], wait: float = 300) -> None:
        """Stop ``name``'s default server (if running) and start it again with ``options``
        (e.g. onto a booking); raises ``ServerError`` when the hub refuses the start."""
        await self._stop(name, wait)
        self.hub.forget(name)
        reply = await self.hub.hub_request("POST", f"{self._path(name)}/server", options)
        if reply.status_code >= 400:
            try:
                message = reply.json().get("message", reply.text)
            except ValueError:
                message = reply.text
            raise ServerError(reply.status_code, str(message))


def _activate(conn: Connection, row: dict[str, Any], actor: str) -> None:
    """The booking's devices are in use from now: active (once), usage counted."""
    if row["state"] == State.BOOKED.value:
        writes.update_booking(conn, row["id"], state=State.ACTIVE)
        writes.record(conn, row["id"], actor, "activate")
    if row["state"] in (State.BOOKED.value, State.ACTIVE.value):
        writes.open_usage(conn, row, ledger.now_ts())
