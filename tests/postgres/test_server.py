"""tests/postgres/server.py: a real PostgreSQL server on loopback only, not run as root, whose
werkhub role can build an exclusion constraint, and which is gone after the context."""

from __future__ import annotations

import os
import pwd
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.postgres import server
from tests.postgres.harness import exits_within, listening_addresses, port_open
from tests.support.processes import processes_in

URL_RE = re.compile(r"postgresql\+psycopg://werkhub:[0-9a-f]{32}@127\.0\.0\.1:\d+/werkhub")
EXCLUSION_VIOLATION = "23P01"


def at(hour: int) -> datetime:
    return datetime(2030, 1, 7, hour, tzinfo=UTC)


def book(conn: Connection, unit: str, starts: int, ends: int) -> None:
    conn.execute(
        text("INSERT INTO booking (unit, starts, ends) VALUES (:unit, :starts, :ends)"),
        {"unit": unit, "starts": at(starts), "ends": at(ends)},
    )


def test_real_server_on_loopback_rejects_overlap_and_stops(
    pg_ctl: Path, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    datadir = tmp_path / "pg" / "server" / "data"
    t0 = time.monotonic()
    with server.running_postgres(tmp_path / "pg", pg_ctl) as url:
        record_property("postgres_start_s", round(time.monotonic() - t0, 2))
        assert URL_RE.fullmatch(url), url
        port = make_url(url).port
        assert port is not None
        assert listening_addresses(port) == {"127.0.0.1"}  # no ::1, no wildcard
        postmaster = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        server_uid = os.stat(f"/proc/{postmaster}").st_uid
        if os.geteuid() == 0:
            assert server_uid == pwd.getpwnam("postgres").pw_uid
        else:
            assert server_uid == os.geteuid()

        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                row = conn.execute(text("SELECT version(), host(inet_server_addr())")).one()
                assert row[0].startswith("PostgreSQL ") and row[1] == "127.0.0.1"
                conn.execute(text("CREATE EXTENSION btree_gist"))  # as werkhub, no superuser
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
    record_property("postgres_stop_s", round(time.monotonic() - t0, 2))

    assert not port_open(port)
    assert listening_addresses(port) == set()
    assert exits_within(postmaster, 10)
    assert processes_in(tmp_path) == []
    assert not datadir.exists()


def test_session_server_role_owns_database_and_needs_its_password(pg_url: str) -> None:
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
            assert conn.execute(text("SHOW TimeZone")).scalar() == "UTC"
    finally:
        engine.dispose()
    url = make_url(pg_url)
    for user, password in (("werkhub", "0" * 32), ("postgres", "")):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host=url.host, port=url.port, dbname="werkhub", user=user, password=password
            ).close()


def test_finds_newest_postgresql_with_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for version, tools in (
        ("9.6", ("pg_ctl", "initdb", "postgres")),
        ("15", ("pg_ctl", "initdb", "postgres")),
        ("16", ("pg_ctl", "initdb")),  # client tools only
    ):
        (tmp_path / version / "bin").mkdir(parents=True)
        for tool in tools:
            (tmp_path / version / "bin" / tool).touch(mode=0o755)
    assert server.find_pg_ctl(tmp_path) == tmp_path / "15" / "bin" / "pg_ctl"
    assert server.find_pg_ctl(tmp_path / "empty") is None

    monkeypatch.setattr(server, "find_pg_ctl", lambda: None)
    with (
        pytest.raises(server.PostgresError, match="not installed"),
        server.running_postgres(tmp_path / "pg"),
    ):
        pass
    assert not (tmp_path / "pg").exists()
