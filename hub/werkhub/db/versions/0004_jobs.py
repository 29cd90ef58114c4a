"""Scheduled jobs: definitions, runs (one row per attempt) and report shares.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("deleted", sa.Float),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("last_fire", sa.Float),
        sa.Column("next_fire", sa.Float),
    )
    op.create_index("ix_jobs_owner", "jobs", ["owner", "id"])
    op.create_index("ix_jobs_next_fire", "jobs", ["next_fire"])
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("job_name", sa.String(128), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("retry_of", sa.Integer),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scheduled_for", sa.Float, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("queued", sa.Float, nullable=False),
        sa.Column("started", sa.Float),
        sa.Column("finished", sa.Float),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("error", sa.String(4000)),
        sa.Column("failed_cell", sa.Integer),
        sa.Column("exit_code", sa.Integer),
        sa.Column("pid", sa.Integer),
        sa.Column("out_dir", sa.String(1024), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("booking_id", sa.Integer),
        sa.Column("timings", sa.JSON),
        sa.CheckConstraint("attempt > 0", name="ck_job_runs_attempt"),
    )
    op.create_index("ix_job_runs_status", "job_runs", ["status", "not_before"])
    op.create_index("ix_job_runs_job", "job_runs", ["job_id", "id"])
    op.create_index("ix_job_runs_owner", "job_runs", ["owner", "finished"])
    op.create_table(
        "report_shares",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("job_runs.id"), nullable=False),
        sa.Column("group", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("run_id", "group", name="uq_report_shares_run_group"),
    )
    op.create_index("ix_report_shares_group", "report_shares", ["group"])


def downgrade() -> None:
    op.drop_table("report_shares")
    op.drop_table("job_runs")
    op.drop_table("jobs")
