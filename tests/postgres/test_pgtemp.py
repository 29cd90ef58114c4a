"""scripts/pgtemp.py: a real PostgreSQL server, an exclusion constraint, a clean stop."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.postgres.harness import pgtemp, port_open, processes_in

URL_RE = re.compile(r"postgresql\+psycopg://werkhub:[0-9a-f]{32}@127\.0\.0\.1:\d+/werkhub")
EXCLUSION_VIOLATION = "23P01"


def at(hour: int) -> datetime:
    return datetime(2030, 1, 7, hour, tzinfo=UTC)


def book(conn: Connection, unit: str, starts: int, ends: int) -> None:
    conn.execute(
        text("INSERT INTO booking (unit, starts, ends) VALUES (:unit, :starts, :ends)"),
        {"unit": unit, "starts": at(starts), "ends": at(ends)},
    )


def test_overlap_rejected_by_database_and_clean_stop(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    directory = tmp_path / "pg"
    t0 = time.monotonic()
    started = pgtemp("start", directory)
    start_s = time.monotonic() - t0
    assert started.returncode == 0, started.stderr
    lines = started.stdout.splitlines()
    assert len(lines) == 1 and URL_RE.fullmatch(lines[0]), started.stdout
    url = lines[0]
    port = make_url(url).port
    assert port is not None and port_open(port)
    assert pgtemp("url", directory).stdout.strip() == url
    record_property("pgtemp_start_s", round(start_s, 2))

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SHOW fsync")).scalar() == "on"
            assert conn.execute(text("SHOW listen_addresses")).scalar() == "127.0.0.1"
            conn.execute(text("CREATE EXTENSION btree_gist"))
            conn.execute(
                text(
                    """
                    CREATE TABLE booking (
                        id bigserial PRIMARY KEY,
                        unit text NOT NULL,
                        starts timestamptz NOT NULL,
                        ends timestamptz NOT NULL,
                        EXCLUDE USING gist (unit WITH =, tstzrange(starts, ends) WITH &&)
                    )
                    """
                )
            )
            book(conn, "gpu-0", 10, 12)

        with pytest.raises(IntegrityError) as rejected, engine.begin() as conn:
            book(conn, "gpu-0", 11, 13)  # overlaps 10-12 on the same unit
        assert getattr(rejected.value.orig, "sqlstate", None) == EXCLUSION_VIOLATION

        with engine.begin() as conn:
            book(conn, "gpu-0", 12, 14)  # [10,12) and [12,14) only touch
            book(conn, "gpu-1", 11, 13)  # same time, other unit
            rows = conn.execute(text("SELECT unit, starts FROM booking ORDER BY unit, starts"))
            assert [(unit, starts.hour) for unit, starts in rows] == [
                ("gpu-0", 10),
                ("gpu-0", 12),
                ("gpu-1", 11),
            ]
    finally:
        engine.dispose()
        t0 = time.monotonic()
        stopped = pgtemp("stop", directory)
        record_property("pgtemp_stop_s", round(time.monotonic() - t0, 2))

    assert stopped.returncode == 0, stopped.stderr
    assert not port_open(port)
    assert processes_in(directory) == []
    again = pgtemp("url", directory)
    assert again.returncode == 2 and "not running" in again.stderr


def test_session_server_role_owns_database(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT current_user, r.rolsuper, pg_get_userbyid(d.datdba)"
                    " FROM pg_roles r, pg_database d"
                    " WHERE r.rolname = current_user AND d.datname = current_database()"
                )
            ).one()
            assert tuple(row) == ("werkhub", False, "werkhub")
            assert conn.execute(text("SHOW max_connections")).scalar() == "200"
    finally:
        engine.dispose()


def test_missing_postgresql_is_explained(tmp_path: Path) -> None:
    result = pgtemp("start", tmp_path / "pg", env={"PGTEMP_BINDIR": str(tmp_path / "none")})
    assert result.returncode == 2
    assert "install the postgresql package, or run make test as root" in result.stderr
    assert result.stdout == ""
