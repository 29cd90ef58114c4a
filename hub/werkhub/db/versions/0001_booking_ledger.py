"""Booking ledger: bookings, promised units, audit, waitlist, notifications, usage.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQLITE_OVERLAP = """
CREATE TRIGGER booking_units_no_overlap_{when}
BEFORE {event} ON booking_units
WHEN NEW.holding = 1 AND EXISTS (
    SELECT 1 FROM booking_units AS other
    WHERE other.unit = NEW.unit AND other.holding = 1 AND other.id != NEW.id
      AND other.start_min < NEW.end_min AND NEW.start_min < other.end_min
)
BEGIN
    SELECT RAISE(ABORT, 'booking_units_no_overlap: unit already promised for this time');
END
"""


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("gpu_type", sa.String(96), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("start_min", sa.BigInteger, nullable=False),
        sa.Column("end_min", sa.BigInteger, nullable=False),
        sa.Column("booked_end_min", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("request_hash", sa.String(64)),
        sa.UniqueConstraint("user", "idempotency_key", name="uq_bookings_idempotency"),
        sa.CheckConstraint("end_min > start_min", name="ck_bookings_interval"),
        sa.CheckConstraint("count > 0", name="ck_bookings_count"),
    )
    op.create_index("ix_bookings_type_start", "bookings", ["gpu_type", "start_min"])
    op.create_index("ix_bookings_user_start", "bookings", ["user", "start_min"])
    op.create_index("ix_bookings_state", "bookings", ["state"])
    op.create_table(
        "booking_units",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "booking_id",
            sa.Integer,
            sa.ForeignKey("bookings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("unit", sa.String(128), nullable=False),
        sa.Column("start_min", sa.BigInteger, nullable=False),
        sa.Column("end_min", sa.BigInteger, nullable=False),
        sa.Column("holding", sa.Boolean, nullable=False),
        sa.CheckConstraint("end_min > start_min", name="ck_booking_units_interval"),
    )
    op.create_index("ix_booking_units_unit_start", "booking_units", ["unit", "start_min"])
    op.create_index("ix_booking_units_booking", "booking_units", ["booking_id"])
    op.create_table(
        "booking_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "booking_id",
            sa.Integer,
            sa.ForeignKey("bookings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_booking_audit_booking", "booking_audit", ["booking_id"])
    op.create_table(
        "waitlist",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("gpu_type", sa.String(96), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("duration_min", sa.Integer, nullable=False),
        sa.Column("not_before_min", sa.BigInteger, nullable=False),
        sa.Column("latest_start_min", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("booking_id", sa.Integer, sa.ForeignKey("bookings.id")),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("ix_waitlist_state", "waitlist", ["state", "id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("booking_id", sa.Integer),
        sa.Column("read", sa.Boolean, nullable=False),
    )
    op.create_index("ix_notifications_user", "notifications", ["user", "id"])
    op.create_table(
        "usage_segments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "booking_id",
            sa.Integer,
            sa.ForeignKey("bookings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float),
    )
    op.create_index("ix_usage_user_start", "usage_segments", ["user", "start"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE booking_units ADD CONSTRAINT booking_units_no_overlap "
            "EXCLUDE USING gist (unit WITH =, int8range(start_min, end_min) WITH &&) "
            "WHERE (holding)"
        )
    else:
        op.execute(SQLITE_OVERLAP.format(when="insert", event="INSERT"))
        op.execute(SQLITE_OVERLAP.format(when="update", event="UPDATE"))


def downgrade() -> None:
    for table in (
        "usage_segments",
        "notifications",
        "waitlist",
        "booking_audit",
        "booking_units",
        "bookings",
    ):
        op.drop_table(table)
