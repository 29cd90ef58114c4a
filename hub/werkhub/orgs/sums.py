"""The ledger's rows behind an organisation's statement: its members' bookings (not
cancelled) overlapping the period, their usage segments, and their job runs queued in it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from werkhub.booking import reads, rows
from werkhub.booking.ledger import State
from werkhub.booking.tables import bookings, usage
from werkhub.jobs.tables import job_runs


def statement_rows(
    reader: Engine, members: set[str], start: datetime, end: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    if not members:
        return [], [], []
    lo, hi = start.timestamp(), end.timestamp()
    people = sorted(members)
    with reader.connect() as conn:
        found = conn.execute(
            select(bookings).where(
                bookings.c.state != State.CANCELLED.value,
                bookings.c.user.in_(people),
                *reads.window(start, end),
            )
        ).mappings()
        booked = [
            {
                "id": b["id"],
                "user": b["user"],
                "gpu_type": b["gpu_type"],
                "count": b["count"],
                "kind": b["kind"],
                "borrowed": bool(b["borrowed"]),
                "start": rows.from_min(b["start_min"]).timestamp(),
                "end": rows.from_min(b["end_min"]).timestamp(),
                "booked_end": rows.from_min(b["booked_end_min"]).timestamp(),
            }
            for b in found
        ]
        segments = [
            dict(s)
            for s in conn.execute(
                select(usage).where(usage.c.start < hi, usage.c.user.in_(people))
            ).mappings()
        ]
        runs = [
            dict(r)
            for r in conn.execute(
                select(job_runs.c.owner, job_runs.c.status).where(
                    job_runs.c.owner.in_(people),
                    job_runs.c.queued >= lo,
                    job_runs.c.queued < hi,
                )
            ).mappings()
        ]
    return booked, segments, runs
