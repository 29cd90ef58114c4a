"""Database tables of federations (SQLAlchemy Core; migration ``0013``). Times are epoch
seconds (UTC)."""

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
    String,
    Table,
    UniqueConstraint,
)

from werkhub.booking.tables import metadata

federations = Table(
    "federations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False),
    Column("owner", String(64), nullable=False),  # the creator: SuperLink, MLflow runs
    Column("owner_org", String(20), nullable=False),
    Column("app", JSON, nullable=False),  # {"template": ...} | {"folder": ...}
    Column("strategy", String(16), nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("min_parties", Integer, nullable=False),
    Column("secure_aggregation", Boolean),  # None: on for 3 or more parties
    Column("run_config", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    UniqueConstraint("owner_org", "name", name="uq_federations_org_name"),
)

#: an organisation invited to a federation, and what it answered
federation_parties = Table(
    "federation_parties",
    metadata,
    Column(
        "federation_id",
        Integer,
        ForeignKey("federations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("org", String(20), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("user", String(64)),  # the party user: the admin who accepted
    Column("data_folder", String(255)),  # relative to that user's home
    Column("gpus", Integer, nullable=False, server_default="0"),
    Column("node", String(128)),  # the registered SuperNode (Flower node id or key print)
    Column("invited_by", String(64), nullable=False),
    Column("updated", Float, nullable=False),
)
Index("ix_federation_parties_org", federation_parties.c.org)

federation_runs = Table(
    "federation_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "federation_id", Integer, ForeignKey("federations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("flower_run_id", String(24)),  # unsigned 64-bit: kept as text
    Column("status", String(16), nullable=False),
    Column("message", String(2000), nullable=False, server_default=""),
    Column("rounds", Integer, nullable=False),
    Column("secure_aggregation", Boolean, nullable=False),
    Column("parties", JSON, nullable=False),  # org slugs taking part
    Column("bookings", JSON, nullable=False),  # org slug -> booking id
    Column("cursor", JSON, nullable=False),  # lines of the app's files already read
    Column("mlflow", JSON, nullable=False),  # {"experiment_id", "run_id", "parties": {...}}
    Column("model", JSON),  # {"name", "version"} once registered
    Column("started_by", String(64), nullable=False),
    Column("started", Float, nullable=False),
    Column("ended", Float),
)
Index("ix_federation_runs_federation", federation_runs.c.federation_id)

federation_rounds = Table(
    "federation_rounds",
    metadata,
    Column(
        "run_id", Integer, ForeignKey("federation_runs.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("round", Integer, primary_key=True),
    Column("parties", Integer, nullable=False),
    Column("loss", Float),
    Column("metrics", JSON, nullable=False),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("at", Float, nullable=False),
)
