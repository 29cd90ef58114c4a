"""What the hub's spawners need from the ledger: the booking a server gets, and when the
server with its devices starts and stops (GPU time used)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select

from werkhub.booking import ledger, rows
from werkhub.booking.idle import Verdict
from werkhub.booking.ledger import HOLDING, NotFound, Slot, State
from werkhub.booking.tables import audit, bookings, server_bookings


class SpawnOps:
    """Mixed into BookingManager."""

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
        with self.read() as conn:
            row = (
                conn.execute(select(bookings).where(*conditions).order_by(bookings.c.start_min))
                .mappings()
                .first()
            )
            return self.view(conn, dict(row)) if row else None

    def next_for(self, user: str) -> dict[str, Any] | None:
        """The user's next booking that has not started yet."""
        minute = rows.to_min(ledger.utcnow())
        with self.read() as conn:
            row = (
                conn.execute(
                    select(bookings)
                    .where(
                        bookings.c.user == user,
                        bookings.c.state == State.BOOKED.value,
                        bookings.c.start_min > minute,
                    )
                    .order_by(bookings.c.start_min)
                )
                .mappings()
                .first()
            )
            return self.view(conn, dict(row)) if row else None

    def mark_started(self, booking_id: int) -> dict[str, Any]:
        """The user's server now runs with this booking's devices."""
        with self.write() as conn:
            row = self._row(conn, booking_id)
            if row is None:
                raise NotFound(f"no booking {booking_id}")
            if row["state"] == State.BOOKED.value:
                self._set(conn, booking_id, state=State.ACTIVE)
                self._audit(conn, booking_id, "werkhub-spawner", "activate")
            if row["state"] in (State.BOOKED.value, State.ACTIVE.value):
                self._open_usage(conn, row, ledger.now_ts())
            # remembered even when the booking ended meanwhile: the tick then ends the server
            conn.execute(delete(server_bookings).where(server_bookings.c.user == row["user"]))
            conn.execute(
                insert(server_bookings).values(
                    user=row["user"], booking_id=booking_id, since=ledger.now_ts()
                )
            )
            return self.view(conn, self._row(conn, booking_id) or {})

    def mark_stopped(self, booking_id: int) -> None:
        with self.write() as conn:
            self._close_usage(conn, booking_id, ledger.now_ts())
            conn.execute(delete(server_bookings).where(server_bookings.c.booking_id == booking_id))

    def mark_cpu_server(self, user: str) -> None:
        """The user's server starts without devices: it runs on no booking.

        Most CPU starts have nothing to forget: they only read, so a burst of CPU spawns
        does not queue behind the single SQLite writer (nor bump the read caches)."""
        mine = server_bookings.c.user == user
        with self.read() as conn:
            if conn.execute(select(server_bookings.c.user).where(mine).limit(1)).first() is None:
                return
        with self.write() as conn:
            conn.execute(delete(server_bookings).where(mine))

    def servers_past_their_booking(self, conn: Any, running: set[str]) -> list[tuple[str, int]]:
        """(user, booking id) of running servers whose booking no longer holds devices;
        each is reported once."""
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
        with self.read() as conn:
            return self._slots(conn, bookings.c.state == State.ACTIVE.value)

    def idle_action(self, booking_id: int, verdict: Verdict) -> bool:
        """Report an idle booking to its user once per idle streak, and release it when the
        idle policy says so. Returns whether anything was done."""
        since = verdict.idle_since.isoformat() if verdict.idle_since else ""
        now = ledger.utcnow()
        with self.write() as conn:
            row = self._row(conn, booking_id)
            if row is None or row["state"] != State.ACTIVE.value:
                return False
            trail = conn.execute(
                select(audit.c.detail).where(
                    audit.c.booking_id == booking_id, audit.c.action == "idle"
                )
            ).scalars()
            if any(d.get("idle_since") == since for d in trail):
                return False
            self._audit(
                conn, booking_id, "werkhub", "idle", idle_since=since, verdict=verdict.action
            )
            local = verdict.idle_since.astimezone(self.settings.tz) if verdict.idle_since else now
            release = verdict.action == "release"
            self._notify(
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
                start = rows.from_min(row["start_min"])
                end = min(
                    max(ledger.ceil_minute(now), start + ledger.MINUTE),
                    rows.from_min(row["end_min"]),
                )
                self._set(conn, booking_id, state=State.RELEASED, end=end)
                self._close_usage(conn, booking_id, ledger.now_ts())
                # the idle watcher ends this server itself
                conn.execute(
                    delete(server_bookings).where(server_bookings.c.booking_id == booking_id)
                )
                self._audit(conn, booking_id, "werkhub", "idle_release", end=end)
                self._serve_waitlist(conn, now)
            return True
