"""What the hub's spawners need from the ledger: the booking a server gets, and when the
server with its devices starts and stops (GPU time used)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from werkhub.booking import ledger, rows
from werkhub.booking.ledger import HOLDING, NotFound, State
from werkhub.booking.tables import bookings


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
                self._open_usage(conn, row, time.time())
            return self.view(conn, self._row(conn, booking_id) or {})

    def mark_stopped(self, booking_id: int) -> None:
        with self.write() as conn:
            self._close_usage(conn, booking_id, time.time())
