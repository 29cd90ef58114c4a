"""Waitlist entries remember their owner's policy, re-checked whenever a slot is found.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("waitlist") as batch:
        batch.add_column(sa.Column("policy", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("waitlist") as batch:
        batch.drop_column("policy")
