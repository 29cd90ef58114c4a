"""Database tables of model serving (SQLAlchemy Core; migration ``0008``). Times are
epoch seconds (UTC); ``endpoint_minutes.minute`` is whole minutes since the epoch."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from werkhub.booking.tables import metadata

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("model", String(256), nullable=False),
    Column("alias", String(256)),  # followed: a moved alias rolls out
    Column("version", String(32)),  # pinned version (alias is then None)
    Column("serving_version", String(32)),  # the version that answers now
    Column("settings", JSON, nullable=False),  # resources, min_replicas, idle_minutes, ...
    Column("groups", JSON, nullable=False),  # hub groups that may call it
    Column("state", String(16), nullable=False),
    Column("reason", String(2000), nullable=False, server_default=""),
    Column("log_tail", Text, nullable=False, server_default=""),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    UniqueConstraint("owner", "name", name="uq_endpoints_owner_name"),
)

#: machine tokens: each may call one endpoint and nothing else; only the SHA-256 is kept
endpoint_tokens = Table(
    "endpoint_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("endpoint_id", Integer, ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("note", String(200), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("expires", Float),
    Column("revoked", Float),
    Column("last_used", Float),
)
Index("ix_endpoint_tokens_endpoint", endpoint_tokens.c.endpoint_id)

endpoint_minutes = Table(
    "endpoint_minutes",
    metadata,
    Column(
        "endpoint_id",
        Integer,
        ForeignKey("endpoints.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("minute", BigInteger, primary_key=True),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("p50_ms", Float, nullable=False),
    Column("p99_ms", Float, nullable=False),
    Column("version", String(32)),
)

endpoint_requests = Table(
    "endpoint_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("endpoint_id", Integer, ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("caller", String(100), nullable=False),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("version", String(32)),
    Column("request", Text, nullable=False),
    Column("response", Text, nullable=False),
)
Index("ix_endpoint_requests_endpoint", endpoint_requests.c.endpoint_id, endpoint_requests.c.id)
