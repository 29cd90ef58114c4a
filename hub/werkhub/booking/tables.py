"""Database tables of the booking ledger (SQLAlchemy Core).

Times of bookings are whole minutes since the Unix epoch (UTC) so that SQLite and
PostgreSQL compare and index them the same way; bookkeeping times are epoch seconds.
The schema itself is created by the Alembic migrations in ``werkhub.db``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
)

metadata = MetaData()

bookings = Table(
    "bookings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(64), nullable=False),
    Column("gpu_type", String(96), nullable=False),
    Column("count", Integer, nullable=False),
    Column("start_min", BigInteger, nullable=False),
    Column("end_min", BigInteger, nullable=False),
    Column("booked_end_min", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("idempotency_key", String(128)),
    Column("request_hash", String(64)),
    #: server (a person's), job (a scheduled run's) or endpoint (a model server's); 0008
    Column("kind", String(16), nullable=False, server_default="server"),
    #: booked beyond the owner's organisation's guarantee: reclaimable (migration 0011)
    Column("borrowed", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("user", "idempotency_key", name="uq_bookings_idempotency"),
)
Index("ix_bookings_type_start", bookings.c.gpu_type, bookings.c.start_min)
Index("ix_bookings_user_start", bookings.c.user, bookings.c.start_min)
Index("ix_bookings_state", bookings.c.state)

#: one row per promised unit; the database refuses two holding rows of one unit that
#: overlap in time (exclusion constraint on PostgreSQL, triggers on SQLite)
booking_units = Table(
    "booking_units",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("booking_id", Integer, ForeignKey("bookings.id", ondelete="CASCADE"), nullable=False),
    Column("unit", String(128), nullable=False),
    Column("start_min", BigInteger, nullable=False),
    Column("end_min", BigInteger, nullable=False),
    Column("holding", Boolean, nullable=False),
    Column("gpu_type", String(96)),  # the booking's type (migration 0007)
)
Index("ix_booking_units_unit_start", booking_units.c.unit, booking_units.c.start_min)
Index("ix_booking_units_booking", booking_units.c.booking_id)
#: availability reads only this index (it covers the query)
Index(
    "ix_booking_units_type_holding",
    booking_units.c.gpu_type,
    booking_units.c.holding,
    booking_units.c.start_min,
    booking_units.c.end_min,
    booking_units.c.unit,
)

audit = Table(
    "booking_audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("booking_id", Integer, ForeignKey("bookings.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", JSON, nullable=False),
)
Index("ix_booking_audit_booking", audit.c.booking_id)

waitlist = Table(
    "waitlist",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(64), nullable=False),
    Column("gpu_type", String(96), nullable=False),
    Column("count", Integer, nullable=False),
    Column("duration_min", Integer, nullable=False),
    Column("not_before_min", BigInteger, nullable=False),
    Column("latest_start_min", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # waiting | granted | expired | cancelled
    Column("policy", JSON),  # the owner's policy when queued (re-checked at each grant)
    Column("booking_id", Integer, ForeignKey("bookings.id")),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)
Index("ix_waitlist_state", waitlist.c.state, waitlist.c.id)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", String(1000), nullable=False),
    Column("booking_id", Integer),
    Column("read", Boolean, nullable=False, default=False),
    Column("job_id", Integer),  # job notices (migration 0005)
    Column("run_id", Integer),
)
Index("ix_notifications_user", notifications.c.user, notifications.c.id)

#: time a user's server ran while a booking held devices for it (GPU time used)
usage = Table(
    "usage_segments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("booking_id", Integer, ForeignKey("bookings.id", ondelete="CASCADE"), nullable=False),
    Column("user", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float),
)
Index("ix_usage_user_start", usage.c.user, usage.c.start)

#: the booking a user's server runs on: set when the server starts with its devices, cleared
#: when it stops; a row whose booking no longer holds means a server keeps devices it may no
#: longer use (it became ready after its booking ended, or the booking was released)
server_bookings = Table(
    "server_bookings",
    metadata,
    Column("user", String(64), primary_key=True),
    Column("booking_id", Integer, ForeignKey("bookings.id", ondelete="CASCADE"), nullable=False),
    Column("since", Float, nullable=False),
)

#: one row per request of the benchmark's floor endpoint (``werkhub.service.probe``)
ledger_probes = Table(
    "ledger_probes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(64), nullable=False),
    Column("at", Float, nullable=False),
)

#: the longest booking ever held of each GPU type, in minutes (it never shrinks): range
#: queries look back that far for bookings that began before a window and reach into it,
#: instead of the 31 days any booking may last (migration 0007; ``writes.stretch``)
ledger_spans = Table(
    "ledger_spans",
    metadata,
    Column("gpu_type", String(96), primary_key=True),
    Column("longest_min", BigInteger, nullable=False),
)

#: the id of every ``booking_units`` row inserted, updated or deleted, in commit order
#: (written by a trigger, migration 0014): how each process's in-memory occupancy
#: (``werkhub.booking.journal``) learns what changed; the newest entries are kept
ledger_journal = Table(
    "ledger_journal",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("row_id", Integer, nullable=False),
    sqlite_autoincrement=True,
)
