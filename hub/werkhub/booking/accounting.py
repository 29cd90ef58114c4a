"""Time passing and accounting: state changes, GPU time used, quotas, usage, notices."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, select, update

from werkhub.booking import journal, ledger, reads, rows, writes
from werkhub.booking.ledger import HOLDING, LedgerError, NotFound, Slot, State
from werkhub.booking.quota import remaining_quota
from werkhub.booking.servers import Servers
from werkhub.booking.settings import Settings
from werkhub.booking.store import Store
from werkhub.booking.tables import (
    audit,
    bookings,
    notifications,
    usage,
)
from werkhub.booking.waitlist import AROUND, Waitlist


class Accounting:
    def __init__(
        self, store: Store, settings: Settings, waitlist: Waitlist, servers: Servers
    ) -> None:
        self.store = store
        self.settings = settings
        self.waitlist = waitlist
        self.servers = servers

    # ---- time passing -------------------------------------------------------------
    def tick(self, running: set[str]) -> dict[str, Any]:
        """Advance states: start, no-show, warn, end; record GPU time used; serve the
        waitlist. Returns counts and ``ended_running``: (user, booking id) of bookings that
        ended while their server still runs (the service stops or downgrades it)."""
        now = ledger.utcnow()
        with self.store.write() as conn:
            slots = reads.slots(
                conn, bookings.c.state.in_(list(HOLDING)), bookings.c.start_min <= rows.to_min(now)
            )
            counts: dict[str, Any] = self._advance(conn, slots, now, running)
            # servers still holding devices of a booking that is over (ended now or earlier,
            # released, a no-show): only these are stopped or downgraded, never CPU servers
            ended_running = self.servers.past_their_booking(conn, running)
            self._track_usage(conn, now, running)
            self.waitlist.serve(conn, now)
            journal.prune(conn)
        counts["ended_running"] = ended_running
        return counts

    def _advance(
        self, conn: Connection, slots: list[Slot], now: datetime, running: set[str]
    ) -> dict[str, int]:
        counts = {"activated": 0, "no_show": 0, "ended": 0, "warned": 0}
        for s in ledger.activations(slots, now, running):
            writes.update_booking(conn, s.id, state=State.ACTIVE)
            writes.record(conn, s.id, "werkhub", "activate")
            counts["activated"] += 1
        no_shows = ledger.no_shows(slots, now, self.settings.no_show_minutes, running)
        for s in no_shows:
            # its devices are free from now: the rest of it counts as released in the usage
            # report (booked = used + released + idle), as for a release by its user
            end = ledger.release_end(s.start, s.end, now)
            writes.update_booking(conn, s.id, state=State.NO_SHOW, end=end)
            writes.record(conn, s.id, "werkhub", "no_show")
            writes.notify(
                conn,
                s.user,
                "no_show",
                f"Your booking {s.id} ({s.count} x "
                f"{s.gpu_type}) was released: no server started within "
                f"{self.settings.no_show_minutes} minutes of its start.",
                s.id,
            )
            counts["no_show"] += 1
        for s in ledger.ending_soon(slots, now, self.settings.warn_minutes):
            if self._warned(conn, s.id, s.end):
                continue  # one warning per end time: extending re-arms it
            writes.record(conn, s.id, "werkhub", "warn", end=s.end)
            end = s.end.astimezone(self.settings.tz)
            then = "stop" if self.settings.end_action == "stop" else "restart without GPUs"
            writes.notify(
                conn,
                s.user,
                "booking_ending",
                f"Your booking {s.id} ({s.count} x {s.gpu_type}) ends at {end:%H:%M}: "
                f"extend it or save your work; then the server will {then}.",
                s.id,
            )
            counts["warned"] += 1
        released = {s.id for s in no_shows}
        for s in ledger.finished(slots, now):
            if s.id in released:
                continue  # released as a no-show in this tick: final, refunded
            writes.update_booking(conn, s.id, state=State.ENDED)
            writes.record(conn, s.id, "werkhub", "end")
            counts["ended"] += 1
        return counts

    def _warned(self, conn: Connection, booking_id: int, end: datetime) -> bool:
        # a reclaim's notice warned of this end already (and says the server restarts
        # without GPUs, whatever booking.end_action does at ordinary ends)
        stamp = end.isoformat()
        trail = conn.execute(
            select(audit.c.detail).where(
                audit.c.booking_id == booking_id, audit.c.action.in_(("warn", "reclaim"))
            )
        ).scalars()
        return any(detail.get("end") == stamp for detail in trail)

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
                # a booking that ended stops counting at its end, not at this tick
                row = reads.row(conn, seg["booking_id"]) or {}
                end = rows.from_min(row["end_min"]).timestamp() if row else stamp
                writes.close_usage(conn, seg["booking_id"], min(stamp, end))
        open_ids = {seg["booking_id"] for seg in open_rows}
        for booking_id, booking in active.items():
            if booking["user"] in running and booking_id not in open_ids:
                writes.open_usage(conn, booking, stamp)

    # ---- reading --------------------------------------------------------------------
    def availability(
        self, gpu_type: str, start: datetime, end: datetime, step: timedelta
    ) -> list[dict[str, Any]]:
        """Free units per step, from this process's occupancy of the type in memory
        (``werkhub.booking.journal``: in step with every write, of any process)."""
        lo_min, step_min, free = self.free_steps(gpu_type, start, end, step)
        return [
            {"start": rows.from_min(lo_min + i * step_min), "free": n} for i, n in enumerate(free)
        ]

    def free_steps(
        self, gpu_type: str, start: datetime, end: datetime, step: timedelta
    ) -> tuple[int, int, list[int]]:
        """``availability`` as numbers: the first step's minute, the step in minutes, and
        the free units of each step."""
        lo, hi, minutes = self._window(gpu_type, start, end, step)
        with self.store.read() as conn:
            busy = self.store.occupancy.busy(conn, gpu_type, lo, hi, minutes)
        return lo, minutes, [self.settings.pool(gpu_type).size - n for n in busy]

    def free_steps_at_once(
        self, gpu_type: str, start: datetime, end: datetime, step: timedelta
    ) -> tuple[int, int, list[int]] | None:
        """``free_steps`` if it takes no loading or waiting (``Occupancies.busy_at_once``),
        else None; invalid input raises as there."""
        lo, hi, minutes = self._window(gpu_type, start, end, step)
        # nothing committed since the last look (SQLite's data_version, PostgreSQL's
        # notifications say so without a query): the answer is in memory
        busy = self.store.occupancy.busy_unchanged(gpu_type, lo, hi, minutes)
        if busy is None and self.store.postgres:
            # else the journal's bounds are a round trip to the database's own process: in
            # the event loop that stopped every other request meanwhile (100k bookings, 16
            # clients: p99 48 ms in the loop, 29 ms from a worker thread)
            return None
        if busy is None:
            with self.store.read() as conn:
                busy = self.store.occupancy.busy_at_once(conn, gpu_type, lo, hi, minutes)
        if busy is None:
            return None
        return lo, minutes, [self.settings.pool(gpu_type).size - n for n in busy]

    def _window(
        self, gpu_type: str, start: datetime, end: datetime, step: timedelta
    ) -> tuple[int, int, int]:
        self.settings.check_type(gpu_type, 1)
        lo, hi = ledger.floor_minute(start), ledger.ceil_minute(end)
        if hi <= lo:
            raise LedgerError("invalid", "end must be after start", field="end")
        ledger.check_steps(lo, hi, step)
        return rows.to_min(lo), rows.to_min(hi), max(1, int(step.total_seconds() // 60))

    def quota(self, user: str, groups: Iterable[str]) -> dict[str, Any]:
        now = ledger.utcnow()
        policy = self.settings.policies.for_user(user, groups)
        with self.store.read() as conn:
            mine = reads.user_slots(conn, user, now - AROUND, now + AROUND)
        return {
            "user": user,
            "policy": policy.model_dump(),
            **remaining_quota(policy, self.settings.tz, user, mine, now),
        }

    def notifications(self, user: str, unread_only: bool = False) -> list[dict[str, Any]]:
        query = select(notifications).where(notifications.c.user == user)
        if unread_only:
            query = query.where(notifications.c.read.is_(False))
        with self.store.read() as conn:
            return [
                {
                    "id": r["id"],
                    "at": rows.from_ts(r["at"]),
                    "kind": r["kind"],
                    "message": r["message"],
                    "booking_id": r["booking_id"],
                    "job_id": r["job_id"],
                    "run_id": r["run_id"],
                    "read": r["read"],
                }
                for r in conn.execute(
                    query.order_by(notifications.c.id.desc()).limit(200)
                ).mappings()
            ]

    def mark_read(self, user: str, ids: list[int] | None) -> int:
        """Mark the user's notifications read: those with ``ids`` (all or none: an id that
        is not the user's is "not found" and nothing changes), or every unread one when
        ``ids`` is None. Returns how many changed from unread to read."""
        mine = notifications.c.user == user
        with self.store.write() as conn:
            if ids is not None:
                wanted = set(ids)
                found = set(
                    conn.execute(
                        select(notifications.c.id).where(mine, notifications.c.id.in_(wanted))
                    ).scalars()
                )
                missing = sorted(wanted - found)
                if missing:
                    raise NotFound(f"no notification {missing[0]} of yours")
                mine = and_(mine, notifications.c.id.in_(wanted))
            changed = conn.execute(
                update(notifications).where(mine, notifications.c.read.is_(False)).values(read=True)
            )
            return int(changed.rowcount or 0)

    def usage(self, start: datetime, end: datetime, user: str | None = None) -> dict[str, dict]:
        """GPU-hours booked, used and released per user within [start, end)."""
        lo, hi = start.timestamp(), end.timestamp()
        totals: dict[str, dict[str, float]] = defaultdict(
            lambda: {"booked": 0.0, "used": 0.0, "released": 0.0}
        )
        with self.store.read() as conn:
            conds: list[Any] = [
                bookings.c.state != State.CANCELLED.value,
                *reads.window(start, end),
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
            now = ledger.now_ts()
            for seg in conn.execute(select(usage).where(*seg_conds)).mappings():
                seg_end = seg["end"] if seg["end"] is not None else now
                totals[seg["user"]]["used"] += seg["count"] * _clip(seg["start"], seg_end, lo, hi)
        return {u: {k: round(v / 3600, 4) for k, v in t.items()} for u, t in totals.items()}


def _clip(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))
