"""Database tables of organisations (SQLAlchemy Core; migration ``0009``)."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, ForeignKey, Integer, String, Table

from werkhub.booking.tables import metadata

orgs = Table(
    "orgs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(20), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    #: GPU-hours the members may book per period in all (None: no budget); migration 0010,
    #: checked by werkhub.booking.orgbudget inside each booking transaction
    Column("budget_gpu_hours", Float),
    Column("budget_period", String(8), nullable=False, server_default="month"),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

#: a user belongs to at most one organisation (the primary key)
org_members = Table(
    "org_members",
    metadata,
    Column("user", String(64), primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("admin", Boolean, nullable=False),
    Column("added", Float, nullable=False),
)

#: hub groups created inside an organisation: shares to them stay inside it
org_groups = Table(
    "org_groups",
    metadata,
    Column("group", String(255), primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("created", Float, nullable=False),
)

#: GPUs of a type that are the organisation's whenever it asks (others may borrow them
#: while they are idle, and are reclaimed with a warning when it does); migration 0011
org_guarantees = Table(
    "org_guarantees",
    metadata,
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("gpu_type", String(96), primary_key=True),
    Column("count", Integer, nullable=False),
)

#: booking policies an organisation's admins set for a member (kind "user") or one of its
#: groups (kind "group"); a user or group belongs to one organisation; migration 0012
org_policies = Table(
    "org_policies",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("policy", JSON, nullable=False),
    Column("updated", Float, nullable=False),
    Column("updated_by", String(64), nullable=False),
)
