"""Organisations' GPU-hour budgets per month or week (checked in the booking transaction).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orgs", sa.Column("budget_gpu_hours", sa.Float, nullable=True))
    op.add_column(
        "orgs",
        sa.Column("budget_period", sa.String(8), nullable=False, server_default="month"),
    )


def downgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("budget_gpu_hours")
