"""Booking tests run against SQLite and a real PostgreSQL server (tests/postgres/server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import reset_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'werkhub.sqlite'}"
    url = request.getfixturevalue("postgres_server")
    reset_postgres(url)
    return url
