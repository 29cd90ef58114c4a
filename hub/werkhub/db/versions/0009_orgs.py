"""Organisations, their members (a user in at most one) and the groups made inside them.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("slug", sa.String(20), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "org_members",
        sa.Column("user", sa.String(64), primary_key=True),
        sa.Column(
            "org_id", sa.Integer, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("added", sa.Float, nullable=False),
    )
    op.create_index("ix_org_members_org", "org_members", ["org_id"])
    op.create_table(
        "org_groups",
        sa.Column("group", sa.String(255), primary_key=True),
        sa.Column(
            "org_id", sa.Integer, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("org_groups")
    op.drop_index("ix_org_members_org", table_name="org_members")
    op.drop_table("org_members")
    op.drop_table("orgs")
