"""Postgres tier: the session's throwaway PostgreSQL server (tests/postgres/server.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pg_url(postgres_server: str) -> str:
    """SQLAlchemy URL of the session's PostgreSQL server (role and database ``werkhub``).

    The role owns its database and may ``CREATE EXTENSION btree_gist``. The server runs
    with fsync off and is stopped when the session ends (see tests/conftest.py).
    """
    return postgres_server
