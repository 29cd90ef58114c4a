"""Time passing and accounting: state changes, GPU time used, quotas, usage, notices."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, insert, select, update

from werkhub.booking import ledger, rows
from werkhub.booking.ledger import HOLDING, State
from werkhub.booking.quota import remaining_quota
from werkhub.booking.tables import bookings, notifications, usage

if TYPE_CHECKING:
    pass


class AccountingOps:
    """Mixed into BookingManager."""

    # ---- time passing -------------------------------------------------------------
    def tick(self, running: set[str]) -> dict[str, int]:
        """Advance states: start, no-show, end; record GPU time used; serve the waitlist."""
        now = ledger.utcnow()
        counts = {"activated": 0, "no_show": 0, "ended": 0}
        with self.write() as conn:
            slots = self._slots(
                conn, bookings.c.state.in_(list(HOLDING)), bookings.c.start_min <= rows.to_min(now)
            )
            for s in ledger.activations(slots, now, running):
                self._set(conn, s.id, state=State.ACTIVE)
                self._audit(conn, s.id, "werkhub", "activate")
                counts["activated"] += 1
            for s in ledger.no_shows(slots, now, self.settings.no_show_minutes, running):
                self._set(conn, s.id, state=State.NO_SHOW)
                self._audit(conn, s.id, "werkhub", "no_show")
                self._notify(
                    conn,
                    s.user,
                    "no_show",
                    f"Your booking {s.id} ({s.count} x "
                    f"{s.gpu_type}) was released: no server started within "
                    f"{self.settings.no_show_minutes} minutes of its start.",
                    s.id,
                )
                counts["no_show"] += 1
            for s in ledger.finished(slots, now):
                self._set(conn, s.id, state=State.ENDED)
                self._audit(conn, s.id, "werkhub", "end")
                counts["ended"] += 1
            self._track_usage(conn, now, running)
            self._serve_waitlist(conn, now)
        return counts

    def _track_usage(self, conn: Connection, now: datetime, running: set[str]) -> None:
        stamp = now.timestamp()
        open_rows = conn.execute(select(usage).where(usage.c.end.is_(None))).mappings().all()
        active = {
            r["id"]: dict(r)
            for r in conn.execute(
                select(bookings).where(bookings.c.state == State.ACTIVE.value)
            ).mappings()
        }
        for seg in open_rows:
            booking = active.get(seg["booking_id"])
            if booking is None or booking["user"] not in running:
                self._close_usage(conn, seg["booking_id"], stamp)
        open_ids = {seg["booking_id"] for seg in open_rows}
        for booking_id, booking in active.items():
            if booking["user"] in running and booking_id not in open_ids:
                self._open_usage(conn, booking, stamp)

    def _open_usage(self, conn: Connection, booking: dict[str, Any], stamp: float) -> None:
        already = conn.execute(
            select(usage.c.id).where(usage.c.booking_id == booking["id"], usage.c.end.is_(None))
        ).first()
        if already is None:
            conn.execute(
                insert(usage).values(
                    booking_id=booking["id"],
                    user=booking["user"],
                    count=booking["count"],
                    start=stamp,
                    end=None,
                )
            )

    def _close_usage(self, conn: Connection, booking_id: int, stamp: float) -> None:
        conn.execute(
            update(usage)
            .where(and_(usage.c.booking_id == booking_id, usage.c.end.is_(None)))
            .values(end=stamp)
        )

    # ---- reading --------------------------------------------------------------------
    def availability(
        self, gpu_type: str, start: datetime, end: datetime, step: timedelta
    ) -> list[dict[str, Any]]:
        self.check_type(gpu_type, 1)
        lo, hi = ledger.floor_minute(start), ledger.ceil_minute(end)
        ledger.check_interval(lo, hi) if hi - lo <= ledger.MAX_BOOKING else None
        with self.read() as conn:
            slots = self._type_slots(conn, gpu_type, lo, hi)
        return [
            {"start": t, "free": n}
            for t, n in ledger.free_counts(self.settings.units, slots, gpu_type, lo, hi, step)
        ]

    def quota(self, user: str, groups: Iterable[str]) -> dict[str, Any]:
        now = ledger.utcnow()
        policy = self.settings.policies.for_user(user, groups)
        with self.read() as conn:
            mine = self._user_slots(conn, user, now - timedelta(days=8), now + timedelta(days=8))
        return {
            "user": user,
            "policy": policy.model_dump(),
            **remaining_quota(policy, self.settings.tz, user, mine, now),
        }

    def notifications(self, user: str, unread_only: bool = False) -> list[dict[str, Any]]:
        query = select(notifications).where(notifications.c.user == user)
        if unread_only:
            query = query.where(notifications.c.read.is_(False))
        with self.read() as conn:
            return [
                {
                    "id": r["id"],
                    "at": rows.from_ts(r["at"]),
                    "kind": r["kind"],
                    "message": r["message"],
                    "booking_id": r["booking_id"],
                    "read": r["read"],
                }
                for r in conn.execute(
                    query.order_by(notifications.c.id.desc()).limit(200)
                ).mappings()
            ]

    def usage(self, start: datetime, end: datetime, user: str | None = None) -> dict[str, dict]:
        """GPU-hours booked, used and released per user within [start, end)."""
        lo, hi = start.timestamp(), end.timestamp()
        totals: dict[str, dict[str, float]] = defaultdict(
            lambda: {"booked": 0.0, "used": 0.0, "released": 0.0}
        )
        with self.read() as conn:
            conds: list[Any] = [
                bookings.c.state != State.CANCELLED.value,
                *self._window(start, end),
            ]
            if user:
                conds.append(bookings.c.user == user)
            for r in conn.execute(select(bookings).where(*conds)).mappings():
                b_lo = rows.from_min(r["start_min"]).timestamp()
                b_end = rows.from_min(r["end_min"]).timestamp()
                b_booked = rows.from_min(r["booked_end_min"]).timestamp()
                t = totals[r["user"]]
                t["booked"] += r["count"] * _clip(b_lo, b_booked, lo, hi)
                t["released"] += r["count"] * _clip(b_end, b_booked, lo, hi)
            seg_conds: list[Any] = [usage.c.start < hi]
            if user:
                seg_conds.append(usage.c.user == user)
            now = time.time()
            for seg in conn.execute(select(usage).where(*seg_conds)).mappings():
                seg_end = seg["end"] if seg["end"] is not None else now
                totals[seg["user"]]["used"] += seg["count"] * _clip(seg["start"], seg_end, lo, hi)
        return {u: {k: round(v / 3600, 4) for k, v in t.items()} for u, t in totals.items()}


def _clip(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))
