"""Notifications name the job and run they are about (job_failed, job_succeeded), so pages
and widgets can link a notice to its report.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("job_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("run_id", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("run_id")
        batch.drop_column("job_id")
