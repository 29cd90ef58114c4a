"""Federations across organisations: their parties, runs and rounds.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("owner_org", sa.String(20), nullable=False),
        sa.Column("app", sa.JSON, nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("rounds", sa.Integer, nullable=False),
        sa.Column("min_parties", sa.Integer, nullable=False),
        sa.Column("secure_aggregation", sa.Boolean),
        sa.Column("run_config", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # open | archived
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.UniqueConstraint("owner_org", "name", name="uq_federations_org_name"),
    )
    op.create_table(
        "federation_parties",
        sa.Column(
            "federation_id",
            sa.Integer,
            sa.ForeignKey("federations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("org", sa.String(20), primary_key=True),
        # invited | accepted | declined | left | revoked
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("user", sa.String(64)),
        sa.Column("data_folder", sa.String(255)),
        sa.Column("gpus", sa.Integer, nullable=False, server_default="0"),
        sa.Column("node", sa.String(128)),
        sa.Column("invited_by", sa.String(64), nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("ix_federation_parties_org", "federation_parties", ["org"])
    op.create_table(
        "federation_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "federation_id",
            sa.Integer,
            sa.ForeignKey("federations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        # Flower's run ids are unsigned 64-bit: more than a signed BIGINT holds
        sa.Column("flower_run_id", sa.String(24)),
        # starting | running | finished | failed | stopped
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.String(2000), nullable=False, server_default=""),
        sa.Column("rounds", sa.Integer, nullable=False),
        sa.Column("secure_aggregation", sa.Boolean, nullable=False),
        sa.Column("parties", sa.JSON, nullable=False),
        sa.Column("bookings", sa.JSON, nullable=False),
        sa.Column("cursor", sa.JSON, nullable=False),
        sa.Column("mlflow", sa.JSON, nullable=False),
        sa.Column("model", sa.JSON),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("ended", sa.Float),
    )
    op.create_index("ix_federation_runs_federation", "federation_runs", ["federation_id"])
    op.create_table(
        "federation_rounds",
        sa.Column(
            "run_id",
            sa.Integer,
            sa.ForeignKey("federation_runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("parties", sa.Integer, nullable=False),
        sa.Column("loss", sa.Float),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("federation_rounds")
    op.drop_index("ix_federation_runs_federation", table_name="federation_runs")
    op.drop_table("federation_runs")
    op.drop_index("ix_federation_parties_org", table_name="federation_parties")
    op.drop_table("federation_parties")
    op.drop_table("federations")
