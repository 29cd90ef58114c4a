"""Availability by GPU type from one index, the longest booking per type, and the
benchmark's floor table.

``booking_units`` gains the GPU type of its booking and an index (type, holding, start, end,
unit) that covers the availability query: it reads only that index, whatever the
number of units of the type (before, it named every unit of the type in an IN list, a
statement that grew with the inventory). Rows written without a type (older code, a
hand-made insert) get their booking's type from a trigger on SQLite; PostgreSQL refuses
them (NOT NULL).

``ledger_spans`` keeps the longest booking ever held per GPU type (it never shrinks), so
range queries look back that far instead of the 31 days any booking may last: with
bookings of a few hours, a one-hour create scans hours of the index, not a month.

``ledger_probes`` is where the floor endpoint of ``bench/booking.py`` writes its one row
per request (see ``werkhub.service.probe``).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SQLITE_FILL = """
CREATE TRIGGER booking_units_fill_type AFTER INSERT ON booking_units
WHEN NEW.gpu_type IS NULL
BEGIN
    UPDATE booking_units
    SET gpu_type = (SELECT gpu_type FROM bookings WHERE bookings.id = NEW.booking_id)
    WHERE id = NEW.id;
END
"""


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("booking_units", sa.Column("gpu_type", sa.String(96), nullable=True))
    op.execute(
        "UPDATE booking_units SET gpu_type = "
        "(SELECT gpu_type FROM bookings WHERE bookings.id = booking_units.booking_id)"
    )
    if sqlite:
        op.execute(SQLITE_FILL)
    else:
        op.alter_column("booking_units", "gpu_type", nullable=False)
    op.create_index(
        "ix_booking_units_type_holding",
        "booking_units",
        ["gpu_type", "holding", "start_min", "end_min", "unit"],
    )
    op.create_table(
        "ledger_spans",
        sa.Column("gpu_type", sa.String(96), primary_key=True),
        sa.Column("longest_min", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO ledger_spans (gpu_type, longest_min) "
        "SELECT gpu_type, max(end_min - start_min) FROM bookings GROUP BY gpu_type"
    )
    op.create_table(
        "ledger_probes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_probes")
    op.drop_table("ledger_spans")
    op.drop_index("ix_booking_units_type_holding", table_name="booking_units")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS booking_units_fill_type")
    op.drop_column("booking_units", "gpu_type")
