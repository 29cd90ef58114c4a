"""Database tables of scheduled jobs, their runs and shared reports (SQLAlchemy Core).

Times are epoch seconds (UTC) as floats. The schema is created by the Alembic migration
``0004`` in ``werkhub.db``; the tables share the booking ledger's metadata so one
migration environment covers both.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from werkhub.booking.tables import metadata

#: job definitions; ``spec`` is the validated JobSpec as JSON
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    Column("deleted", Float),  # soft delete: runs and reports stay
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("last_fire", Float),  # the latest scheduled time that was queued
    Column("next_fire", Float),  # the next scheduled time (None: nothing scheduled)
)
Index("ix_jobs_owner", jobs.c.owner, jobs.c.id)
Index("ix_jobs_next_fire", jobs.c.next_fire)

#: one row per attempt; a retry is a new row with attempt + 1 and ``retry_of``
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("job_name", String(128), nullable=False),
    Column("title", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("retry_of", Integer),
    Column("trigger", String(16), nullable=False),  # schedule | catch_up | manual | retry
    Column("status", String(16), nullable=False),
    Column("scheduled_for", Float, nullable=False),
    Column("not_before", Float, nullable=False),
    Column("queued", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
    Column("parameters", JSON, nullable=False),
    Column("error", String(4000)),
    Column("failed_cell", Integer),
    Column("exit_code", Integer),
    Column("pid", Integer),  # process group of a local run, to end it after a crash
    Column("out_dir", String(1024), nullable=False),
    Column("mlflow_run_id", String(64)),
    Column("booking_id", Integer),
    Column("timings", JSON),
)
Index("ix_job_runs_status", job_runs.c.status, job_runs.c.not_before)
Index("ix_job_runs_job", job_runs.c.job_id, job_runs.c.id)
Index("ix_job_runs_owner", job_runs.c.owner, job_runs.c.finished)

report_shares = Table(
    "report_shares",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("job_runs.id"), nullable=False),
    Column("group", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("created_by", String(64), nullable=False),
    UniqueConstraint("run_id", "group", name="uq_report_shares_run_group"),
)
Index("ix_report_shares_group", report_shares.c.group)
