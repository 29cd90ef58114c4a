"""A journal of changes to ``booking_units``, so each process's in-memory occupancy
(``werkhub.booking.journal``) follows every change, its own and other processes', by
reading only what changed since it last looked.

A trigger on ``booking_units`` writes the row's id for every insert, update and delete;
readers join the journal with ``booking_units`` for the row's state now. The ledger's
writes are serialised (SQLite's write lock, the ledger's advisory lock on PostgreSQL), so
sequence order is commit order. ``Accounting.tick`` keeps the newest entries only.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SQLITE = [
    f"""
CREATE TRIGGER booking_units_journal_{event.lower()} AFTER {event} ON booking_units
BEGIN
    INSERT INTO ledger_journal (row_id) VALUES ({row}.id);
END
"""
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
]

POSTGRES = [
    """
CREATE FUNCTION ledger_journal_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO ledger_journal (row_id) VALUES (OLD.id);
    ELSE
        INSERT INTO ledger_journal (row_id) VALUES (NEW.id);
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER booking_units_journal AFTER INSERT OR UPDATE OR DELETE ON booking_units
FOR EACH ROW EXECUTE FUNCTION ledger_journal_note()
""",
]


def upgrade() -> None:
    op.create_table(
        "ledger_journal",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("row_id", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE if sqlite else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS booking_units_journal_{event}")
    else:
        op.execute("DROP TRIGGER IF EXISTS booking_units_journal ON booking_units")
        op.execute("DROP FUNCTION IF EXISTS ledger_journal_note()")
    op.drop_table("ledger_journal")
