"""The queue's database side: per-owner counts, the cap, and the window of waiting runs that
fair ordering (``werkhub.jobs.fairness``) picks from. Functions over an open connection, so
they run inside the store's transactions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select

from werkhub.booking.tables import notifications
from werkhub.jobs.errors import QueueFull
from werkhub.jobs.fairness import Waiting
from werkhub.jobs.tables import job_runs

#: statuses of a run that is still to start
WAITING = ("queued", "waiting_gpu")


def waiting_count(conn: Connection, owner: str) -> int:
    query = select(func.count()).where(job_runs.c.owner == owner, job_runs.c.status.in_(WAITING))
    return int(conn.execute(query).scalar_one())


def check_queue(conn: Connection, owner: str, cap: int) -> None:
    """QueueFull when ``owner`` already has ``cap`` runs waiting (counted in
    the write transaction, so parallel requests cannot pass the cap together)."""
    waiting = waiting_count(conn, owner)
    if waiting >= cap:
        raise QueueFull(
            f"you already have {waiting} runs waiting to start, the most one person "
            f"may queue (jobs.max_queued_per_user is {cap}); nothing was "
            "queued: try again when some of them have run",
            "queue",
        )


def notify_skipped(conn: Connection, job: Any, skipped: int, cap: int, now: float) -> None:
    times = "time was" if skipped == 1 else f"{skipped} times were"
    message = (
        f"Job '{job['spec']['name']}': a scheduled {times} skipped because you already "
        f"have {cap} runs waiting to start (jobs.max_queued_per_user)."
    )
    conn.execute(
        insert(notifications).values(
            user=job["owner"],
            at=now,
            kind="job_failed",
            message=message[:1000],
            read=False,
            job_id=job["id"],
        )
    )


def waiting_window(conn: Connection, now: float, per_owner: int, skip: list[int]) -> list[Waiting]:
    """Each owner's ``per_owner`` oldest runs that may start now: one query, and one
    owner's thousand runs cannot push anyone else's out of it."""
    where = [job_runs.c.status.in_(WAITING), job_runs.c.not_before <= now]
    if skip:
        where.append(job_runs.c.id.not_in(skip))
    rank = (
        func.row_number()
        .over(partition_by=job_runs.c.owner, order_by=(job_runs.c.not_before, job_runs.c.id))
        .label("rank")
    )
    ranked = (
        select(job_runs.c.id, job_runs.c.owner, job_runs.c.not_before, rank)
        .where(*where)
        .subquery()
    )
    query = select(ranked.c.id, ranked.c.owner, ranked.c.not_before).where(
        ranked.c.rank <= per_owner
    )
    return [Waiting(int(i), str(o), float(nb)) for i, o, nb in conn.execute(query)]
