"""PostgreSQL: every change to ``booking_units`` also notifies channel ``werkhub_ledger``
when its transaction commits, so each process's occupancy in memory
(``werkhub.booking.journal``) knows without a query that nothing changed since it last
looked (``werkhub.db.notify``). PostgreSQL folds the notifications of one transaction
into one. SQLite needs nothing: ``PRAGMA data_version`` tells the same.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CHANNEL = "werkhub_ledger"


def _function(notify: bool) -> str:
    extra = f"\n    PERFORM pg_notify('{CHANNEL}', '');" if notify else ""
    return f"""
CREATE OR REPLACE FUNCTION ledger_journal_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO ledger_journal (row_id) VALUES (OLD.id);
    ELSE
        INSERT INTO ledger_journal (row_id) VALUES (NEW.id);
    END IF;{extra}
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(notify=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(notify=False))
