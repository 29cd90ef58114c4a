"""SQLite: bound the no-overlap triggers' index scan by the longest booking.

The first triggers looked at every earlier row of a unit, so each insert got slower as a
unit's history grew. No booking lasts longer than 31 days (44,640 minutes), so a row that
overlaps a new one starts less than that before it: the index range is now bounded.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MAX_MINUTES = 31 * 24 * 60

TRIGGER = """
CREATE TRIGGER booking_units_no_overlap_{when}
BEFORE {event} ON booking_units
WHEN NEW.holding = 1 AND EXISTS (
    SELECT 1 FROM booking_units AS other
    WHERE other.unit = NEW.unit AND other.holding = 1 AND other.id != NEW.id
      AND other.start_min > NEW.start_min - {span}
      AND other.start_min < NEW.end_min AND NEW.start_min < other.end_min
)
BEGIN
    SELECT RAISE(ABORT, 'booking_units_no_overlap: unit already promised for this time');
END
"""


def _replace(span: int | None) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL's exclusion constraint needs no change
    for when, event in (("insert", "INSERT"), ("update", "UPDATE")):
        op.execute(f"DROP TRIGGER IF EXISTS booking_units_no_overlap_{when}")
        sql = TRIGGER.format(when=when, event=event, span=span if span else 10**12)
        op.execute(sql)


def upgrade() -> None:
    _replace(MAX_MINUTES)


def downgrade() -> None:
    _replace(None)
