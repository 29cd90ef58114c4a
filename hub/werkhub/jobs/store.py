"""Storage of jobs, runs and report shares: every operation is one database transaction.

A refused request writes nothing. Owners see only their own jobs, runs and reports
(others' ids answer 404), administrators see everything, and a report shared with a
group is visible to the group's members. Times going in and out are epoch seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select, text, update

from werkhub.booking.tables import notifications
from werkhub.db import writer_queue
from werkhub.jobs import queue
from werkhub.jobs.errors import Conflict, NotFound
from werkhub.jobs.fairness import fair_pick
from werkhub.jobs.queue import WAITING
from werkhub.jobs.tables import job_runs, jobs, report_shares

#: statuses of a run; the first three are still to do or doing
ACTIVE = ("running",)
FINAL = ("succeeded", "failed", "timed_out", "interrupted", "cancelled")
REPORTED = ("succeeded", "failed", "timed_out")
LOCK_KEY = 727_274_006  # advisory lock of the job tables on PostgreSQL


@dataclass(frozen=True)
class Viewer:
    """Who asks: admins see everything, others their own and what their groups share."""

    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retry:
    """The next attempt of a failed run: when it may start (epoch seconds)."""

    not_before: float


class JobStore:
    def __init__(
        self, writer: Engine, reader: Engine, runs_dir: Path, max_queued: int = 20
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.runs_dir = runs_dir
        #: waiting runs (queued or waiting for a GPU) one owner may have at a time
        self.max_queued = max_queued
        self.postgres = writer.dialect.name == "postgresql"
        self._lock = writer_queue(writer)  # the same queue as the booking ledger's

    # ---- transactions ---------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._lock, self.writer.begin() as conn:
            if self.postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.reader.connect() as conn:
            yield conn

    # ---- views ----------------------------------------------------------------------
    @staticmethod
    def job_view(row: Any) -> dict[str, Any]:
        return {
            "id": row["id"],
            "owner": row["owner"],
            **row["spec"],
            "paused": bool(row["paused"]),
            "created": row["created"],
            "updated": row["updated"],
            "last_fire": row["last_fire"],
            "next_fire": row["next_fire"],
        }

    @staticmethod
    def run_view(row: Any) -> dict[str, Any]:
        started, finished = row["started"], row["finished"]
        return {
            "id": row["id"],
            "job_id": row["job_id"],
            "job_name": row["job_name"],
            "owner": row["owner"],
            "title": row["title"],
            "status": row["status"],
            "attempt": row["attempt"],
            "retry_of": row["retry_of"],
            "trigger": row["trigger"],
            "scheduled_for": row["scheduled_for"],
            "not_before": row["not_before"],
            "queued": row["queued"],
            "started": started,
            "finished": finished,
            "duration_s": round(finished - started, 3) if started and finished else None,
            "error": row["error"],
            "failed_cell": row["failed_cell"],
            "exit_code": row["exit_code"],
            "parameters": row["parameters"],
            "mlflow_run_id": row["mlflow_run_id"],
            "booking_id": row["booking_id"],
            "timings": row["timings"],
            "out_dir": row["out_dir"],
        }

    def _job_row(self, conn: Connection, job_id: int, viewer: Viewer | None) -> Any:
        row = (
            conn.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.deleted.is_(None)))
            .mappings()
            .first()
        )
        if row is None or (viewer is not None and not _may_see(viewer, row["owner"])):
            raise NotFound(f"no job {job_id}")
        return row

    def _run_row(self, conn: Connection, run_id: int) -> Any:
        return conn.execute(select(job_runs).where(job_runs.c.id == run_id)).mappings().first()

    def _shares(self, conn: Connection, run_ids: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {i: [] for i in run_ids}
        if run_ids:
            query = (
                select(report_shares.c.run_id, report_shares.c.group)
                .where(report_shares.c.run_id.in_(run_ids))
                .order_by(report_shares.c.group)
            )
            for run_id, group in conn.execute(query):
                found[run_id].append(group)
        return found

    def _visible_run(self, conn: Connection, run_id: int, viewer: Viewer, shared: bool) -> Any:
        row = self._run_row(conn, run_id)
        if row is None:
            raise NotFound(f"no run {run_id}")
        if _may_see(viewer, row["owner"]):
            return row
        if shared and set(self._shares(conn, [run_id])[run_id]) & set(viewer.groups):
            return row
        raise NotFound(f"no run {run_id}")

    # ---- jobs -----------------------------------------------------------------------
    def create_job(
        self, owner: str, spec: dict[str, Any], next_fire: float | None, now: float
    ) -> dict[str, Any]:
        """Store a definition; a ``now`` schedule queues its first run in the same
        transaction. Names are unique per owner."""
        with self.write() as conn:
            self._unique_name(conn, owner, spec["name"])
            job_id = conn.execute(
                insert(jobs)
                .values(
                    owner=owner,
                    name=spec["name"],
                    spec=spec,
                    paused=False,
                    created=now,
                    updated=now,
                    next_fire=next_fire,
                )
                .returning(jobs.c.id)
            ).scalar_one()
            row = self._job_row(conn, job_id, None)
            if spec["schedule"]["kind"] == "now":
                queue.check_queue(
                    conn, owner, self.max_queued
                )  # refused: the job is not stored either
                self._enqueue(conn, row, "manual", now, now)
            return self.job_view(row)

    def _unique_name(self, conn: Connection, owner: str, name: str, ignore: int = 0) -> None:
        clash = conn.execute(
            select(jobs.c.id).where(
                jobs.c.owner == owner,
                jobs.c.name == name,
                jobs.c.deleted.is_(None),
                jobs.c.id != ignore,
            )
        ).first()
        if clash is not None:
            raise Conflict(f"you already have a job named '{name}' (job {clash[0]})", "name")

    def get_job(self, viewer: Viewer, job_id: int) -> dict[str, Any]:
        with self.read() as conn:
            return self.job_view(self._job_row(conn, job_id, viewer))

    def job_owner(self, viewer: Viewer, job_id: int) -> str:
        return self.get_job(viewer, job_id)["owner"]

    def list_jobs(self, viewer: Viewer, everyone: bool = False) -> list[dict[str, Any]]:
        query = select(jobs).where(jobs.c.deleted.is_(None))
        if not (everyone and viewer.admin):
            query = query.where(jobs.c.owner == viewer.name)
        with self.read() as conn:
            rows = conn.execute(query.order_by(jobs.c.id)).mappings().all()
            return [self.job_view(r) for r in rows]

    def update_job(
        self,
        viewer: Viewer,
        job_id: int,
        spec: dict[str, Any],
        next_fire: float | None,
        now: float,
    ) -> dict[str, Any]:
        with self.write() as conn:
            row = self._job_row(conn, job_id, viewer)
            self._unique_name(conn, row["owner"], spec["name"], ignore=job_id)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(spec=spec, name=spec["name"], updated=now, next_fire=next_fire)
            )
            return self.job_view(self._job_row(conn, job_id, None))

    def delete_job(self, viewer: Viewer, job_id: int, now: float) -> list[int]:
        """Soft delete (runs and reports stay); queued runs are cancelled. Returns the ids
        of runs still running, which the caller stops."""
        with self.write() as conn:
            self._job_row(conn, job_id, viewer)
            conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(deleted=now, next_fire=None)
            )
            conn.execute(
                update(job_runs)
                .where(job_runs.c.job_id == job_id, job_runs.c.status.in_(WAITING))
                .values(status="cancelled", finished=now, error="the job was deleted")
            )
            running = conn.execute(
                select(job_runs.c.id).where(
                    job_runs.c.job_id == job_id, job_runs.c.status.in_(ACTIVE)
                )
            ).scalars()
            return list(running)

    def set_paused(
        self, viewer: Viewer, job_id: int, paused: bool, next_fire: float | None, now: float
    ) -> dict[str, Any]:
        """Pause or resume. Resuming sets the next fire from now: fires missed while
        paused are not caught up."""
        with self.write() as conn:
            row = self._job_row(conn, job_id, viewer)
            values: dict[str, Any] = {"paused": paused, "updated": now}
            if not paused:
                values["next_fire"] = next_fire
                values["last_fire"] = now if row["next_fire"] is not None else row["last_fire"]
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            return self.job_view(self._job_row(conn, job_id, None))

    # ---- runs -----------------------------------------------------------------------
    def _enqueue(
        self,
        conn: Connection,
        job: Any,
        trigger: str,
        scheduled_for: float,
        not_before: float,
        attempt: int = 1,
        retry_of: int | None = None,
        parameters: dict[str, Any] | None = None,
        queued: float | None = None,
    ) -> int:
        """Queue a run; ``queued`` (when it was queued) defaults to ``not_before``: the
        callers' ``now``, from the ledger's clock like every other time here."""
        spec = job["spec"]
        run_id = conn.execute(
            insert(job_runs)
            .values(
                job_id=job["id"],
                owner=job["owner"],
                job_name=spec["name"],
                title=((spec.get("report") or {}).get("title") or spec["name"])[:200],
                attempt=attempt,
                retry_of=retry_of,
                trigger=trigger,
                status="queued",
                scheduled_for=scheduled_for,
                not_before=not_before,
                queued=not_before if queued is None else queued,
                parameters=(spec.get("parameters") or {}) if parameters is None else parameters,
                out_dir="",
            )
            .returning(job_runs.c.id)
        ).scalar_one()
        out_dir = self.runs_dir / job["owner"] / str(job["id"]) / str(run_id)
        conn.execute(update(job_runs).where(job_runs.c.id == run_id).values(out_dir=str(out_dir)))
        return run_id

    def run_now(self, viewer: Viewer, job_id: int, now: float) -> dict[str, Any]:
        with self.write() as conn:
            row = self._job_row(conn, job_id, viewer)
            queue.check_queue(conn, row["owner"], self.max_queued)
            run_id = self._enqueue(conn, row, "manual", now, now)
            return self.run_view(self._run_row(conn, run_id))

    def get_run(self, viewer: Viewer, run_id: int, shared: bool = False) -> dict[str, Any]:
        with self.read() as conn:
            row = self._visible_run(conn, run_id, viewer, shared)
            view = self.run_view(row)
            view["shared_with"] = self._shares(conn, [run_id])[run_id]
            return view

    def list_runs(self, viewer: Viewer, job_id: int, limit: int = 100) -> list[dict[str, Any]]:
        with self.read() as conn:
            query = select(job_runs).where(job_runs.c.job_id == job_id)
            job = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            if job is None or not _may_see(viewer, job["owner"]):
                raise NotFound(f"no job {job_id}")
            rows = conn.execute(query.order_by(job_runs.c.id.desc()).limit(limit)).mappings()
            return [self.run_view(r) for r in rows]

    # ---- the scheduler's side -------------------------------------------------------
    def due_jobs(self, now: float) -> list[dict[str, Any]]:
        query = select(jobs).where(
            jobs.c.deleted.is_(None),
            jobs.c.paused.is_(False),
            jobs.c.next_fire.is_not(None),
            jobs.c.next_fire <= now,
        )
        with self.read() as conn:
            return [dict(r) for r in conn.execute(query.order_by(jobs.c.next_fire)).mappings()]

    def record_fires(
        self,
        job_id: int,
        expected_next: float,
        fires: Iterable[tuple[float, str]],
        next_fire: float | None,
        now: float,
    ) -> list[int]:
        """Queue one run per (scheduled time, trigger) and move the job's next fire, if
        nobody else did in between (compare-and-set on ``next_fire``). Fires beyond the
        owner's queue cap are skipped, and the owner is told so."""
        with self.write() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            if (
                row is None
                or row["deleted"] is not None
                or row["paused"]
                or row["next_fire"] != expected_next
            ):
                return []
            fires = list(fires)
            room = max(0, self.max_queued - queue.waiting_count(conn, row["owner"]))
            ids = [self._enqueue(conn, row, trigger, at, now) for at, trigger in fires[:room]]
            if len(fires) > room:
                queue.notify_skipped(conn, row, len(fires) - room, self.max_queued, now)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(next_fire=next_fire, last_fire=max([expected_next, *(a for a, _ in fires)]))
            )
            return ids

    def runnable(
        self,
        now: float,
        max_concurrent: int,
        max_per_user: int,
        skip: Iterable[int] = (),
    ) -> list[dict]:
        """Waiting runs that may start now within the limits, in fair order between
        owners (``werkhub.jobs.fairness``); ``skip``: runs not to offer again (a GPU run
        that found no free GPU this tick leaves its slot to the next one)."""
        skipped = list(skip)
        with self.read() as conn:
            running = Counter(
                conn.execute(
                    select(job_runs.c.owner).where(job_runs.c.status.in_(ACTIVE))
                ).scalars()
            )
            free = max_concurrent - sum(running.values())
            if free <= 0:
                return []
            waiting = queue.waiting_window(conn, now, max_per_user, skipped)
            owners = sorted({w.owner for w in waiting})
            last_start = dict(
                conn.execute(
                    select(job_runs.c.owner, func.max(job_runs.c.started))
                    .where(job_runs.c.owner.in_(owners), job_runs.c.started.is_not(None))
                    .group_by(job_runs.c.owner)
                ).all()
            )
            picked = fair_pick(waiting, running, last_start, free, max_per_user)
            rows = {
                r["id"]: dict(r)
                for r in conn.execute(
                    select(job_runs).where(job_runs.c.id.in_([p.id for p in picked]))
                ).mappings()
            }
            chosen = [rows[p.id] for p in picked if p.id in rows]
            specs = self._specs(conn, {r["job_id"] for r in chosen})
            for run in chosen:
                run["spec"] = specs[run["job_id"]]
            return chosen

    def _specs(self, conn: Connection, job_ids: set[int]) -> dict[int, dict[str, Any]]:
        if not job_ids:
            return {}
        query = select(jobs.c.id, jobs.c.spec).where(jobs.c.id.in_(job_ids))
        return {i: spec for i, spec in conn.execute(query)}

    def mark(
        self, run_id: int, status: str, expect: Iterable[str] = WAITING, **values: Any
    ) -> bool:
        """Move a run to ``status`` if it is still in one of ``expect``."""
        with self.write() as conn:
            done = conn.execute(
                update(job_runs)
                .where(job_runs.c.id == run_id, job_runs.c.status.in_(list(expect)))
                .values(status=status, **values)
            )
            return done.rowcount == 1

    def set_pid(self, run_id: int, pid: int) -> None:
        with self.write() as conn:
            conn.execute(update(job_runs).where(job_runs.c.id == run_id).values(pid=pid))

    def finish(
        self,
        run_id: int,
        status: str,
        now: float,
        retry: Retry | None,
        notice: tuple[str, str] | None,
        **values: Any,
    ) -> dict[str, Any]:
        """Record the outcome; queue the retry and write the notification in the same
        transaction. Returns the run with ``retry_id`` (or None)."""
        with self.write() as conn:
            row = self._run_row(conn, run_id)
            if row is None:
                raise NotFound(f"no run {run_id}")
            conn.execute(
                update(job_runs)
                .where(job_runs.c.id == run_id)
                .values(status=status, finished=now, **values)
            )
            retry_id = None
            job = conn.execute(select(jobs).where(jobs.c.id == row["job_id"])).mappings().first()
            if retry is not None and job is not None and job["deleted"] is None:
                retry_id = self._enqueue(
                    conn,
                    job,
                    "retry",
                    row["scheduled_for"],
                    retry.not_before,
                    attempt=row["attempt"] + 1,
                    retry_of=row["retry_of"] or row["id"],
                    parameters=row["parameters"],
                    queued=now,
                )
            if notice is not None:
                kind, message = notice
                conn.execute(
                    insert(notifications).values(
                        user=row["owner"],
                        at=now,
                        kind=kind,
                        message=message[:1000],
                        read=False,
                        job_id=row["job_id"],
                        run_id=run_id,
                    )
                )
            view = self.run_view(self._run_row(conn, run_id))
            view["retry_id"] = retry_id
            return view

    def running_runs(self) -> list[dict[str, Any]]:
        query = select(job_runs).where(job_runs.c.status.in_(ACTIVE))
        with self.read() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            specs = self._specs(conn, {r["job_id"] for r in rows})
        for run in rows:
            run["spec"] = specs[run["job_id"]]
        return rows

    # ---- reports --------------------------------------------------------------------
    def reports(self, viewer: Viewer, limit: int = 200) -> list[dict[str, Any]]:
        query = select(job_runs).where(job_runs.c.status.in_(REPORTED))
        if not viewer.admin:
            shared = select(report_shares.c.run_id).where(
                report_shares.c.group.in_(list(viewer.groups) or [""])
            )
            query = query.where(or_(job_runs.c.owner == viewer.name, job_runs.c.id.in_(shared)))
        query = query.order_by(job_runs.c.finished.desc(), job_runs.c.id.desc()).limit(limit)
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
            shares = self._shares(conn, [r["id"] for r in rows])
            return [{**self.run_view(r), "shared_with": shares[r["id"]]} for r in rows]

    def share(self, viewer: Viewer, run_id: int, group: str, now: float) -> list[str]:
        with self.write() as conn:
            row = self._visible_run(conn, run_id, viewer, shared=False)
            if row["status"] not in REPORTED:
                raise Conflict(f"run {run_id} has no report yet (status {row['status']})")
            exists = conn.execute(
                select(report_shares.c.id).where(
                    report_shares.c.run_id == run_id, report_shares.c.group == group
                )
            ).first()
            if exists is None:
                conn.execute(
                    insert(report_shares).values(
                        run_id=run_id, group=group, created=now, created_by=viewer.name
                    )
                )
            return self._shares(conn, [run_id])[run_id]

    def unshare(self, viewer: Viewer, run_id: int, group: str) -> list[str]:
        with self.write() as conn:
            self._visible_run(conn, run_id, viewer, shared=False)
            gone = conn.execute(
                report_shares.delete().where(
                    report_shares.c.run_id == run_id, report_shares.c.group == group
                )
            )
            if gone.rowcount == 0:
                raise NotFound(f"report {run_id} is not shared with group '{group}'")
            return self._shares(conn, [run_id])[run_id]


def _may_see(viewer: Viewer, owner: str) -> bool:
    return viewer.admin or viewer.name == owner
