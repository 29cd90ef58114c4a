"""Guaranteed GPUs per organisation and type, and bookings marked as borrowed.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_guarantees",
        sa.Column(
            "org_id", sa.Integer, sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("gpu_type", sa.String(96), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.add_column(
        "bookings",
        sa.Column("borrowed", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("bookings") as batch:
        batch.drop_column("borrowed")
    op.drop_table("org_guarantees")
