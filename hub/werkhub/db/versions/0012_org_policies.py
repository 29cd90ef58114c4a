"""Booking policies an organisation's admins set for its members and groups.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_policies",
        sa.Column("kind", sa.String(8), primary_key=True),  # user | group
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column(
            "org_id", sa.Integer, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_org_policies_org", "org_policies", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_org_policies_org", table_name="org_policies")
    op.drop_table("org_policies")
