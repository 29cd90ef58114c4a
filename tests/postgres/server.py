"""Throwaway PostgreSQL servers for tests and benchmarks, on pytest-postgresql's executor.

``running_postgres(directory)`` starts the newest PostgreSQL under /usr/lib/postgresql/*/bin
(else pg_ctl on PATH) on 127.0.0.1 only, on a free port, in ``directory/server``; creates
the role ``werkhub`` owning the database ``werkhub`` and checks that it can create
btree_gist; yields ``postgresql+psycopg://werkhub:PASSWORD@127.0.0.1:PORT/werkhub``; stops
the server. fsync is off (the library's default). As root, pg_ctl (so initdb and the server)
runs as the ``postgres`` user via setpriv from a wrapper script in ``directory``, with
CAP_DAC_READ_SEARCH only where a parent is closed to it (/tmp/pytest-of-root is 0700).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import port_for
import psycopg
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor

HOST = "127.0.0.1"
ROLE = DATABASE = "werkhub"
SUPERUSER = SERVER_USER_WHEN_ROOT = "postgres"
NOT_INSTALLED = "PostgreSQL is not installed (run make test as root to install it)"
SETTINGS = (  # a small (2-core) test box
    f"-c listen_addresses={HOST} -c max_connections=200 -c max_worker_processes=4"
    " -c max_parallel_workers=2 -c max_parallel_workers_per_gather=1"
    " -c timezone=UTC -c log_timezone=UTC"
)


class PostgresError(RuntimeError):
    """No PostgreSQL to run, or it did not start."""


def _major(bindir: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", bindir.parent.name)]


def find_pg_ctl(root: Path = Path("/usr/lib/postgresql")) -> Path | None:
    """pg_ctl of the newest PostgreSQL under ``root`` that has a server, else from PATH."""
    candidates = sorted(root.glob("*/bin"), key=_major, reverse=True)
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    tools = ("pg_ctl", "initdb", "postgres")
    usable = (b for b in candidates if all(os.access(b / t, os.X_OK) for t in tools))
    return next((bindir / "pg_ctl" for bindir in usable), None)


class _Executor(PostgreSQLExecutor):
    """initdb: peer auth on the socket, SCRAM on TCP; the password file for the server user."""

    owner: tuple[int, int] | None = None

    def _build_initdb_command(self, initdb_options: list[str], pgdata: str | None = None):
        options = [o for o in initdb_options if not o.startswith("--auth")]
        for option in options:
            if option.startswith("--pwfile=") and self.owner:
                os.chown(option.removeprefix("--pwfile="), *self.owner)
        options += ["--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8"]
        return super()._build_initdb_command([*options, "--no-sync"], pgdata)


def _pg_ctl_as_postgres(pg_ctl: Path, directory: Path, home: Path) -> tuple[str, tuple[int, int]]:
    """A wrapper script that runs pg_ctl as the postgres user, and that user's uid, gid."""
    try:
        pw = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
    except KeyError:
        no_user = f"running as root, but no '{SERVER_USER_WHEN_ROOT}' user to run PostgreSQL"
        raise PostgresError(f"{no_user}; install the postgresql package") from None
    os.chown(home, pw.pw_uid, pw.pw_gid)
    setpriv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    probe = [*setpriv, "--", "test", "-x", str(home), "-a", "-w", str(home)]
    if subprocess.run(probe, cwd="/", check=False).returncode != 0:  # a parent is closed
        setpriv += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    wrapper = directory / "pg_ctl-as-postgres"
    command = shlex.join([*setpriv, "--", str(pg_ctl)])
    wrapper.write_text(f'#!/bin/sh\ncd / && exec {command} "$@"\n')
    wrapper.chmod(0o700)
    return str(wrapper), (pw.pw_uid, pw.pw_gid)


@contextmanager
def running_postgres(directory: Path, pg_ctl: Path | None = None) -> Iterator[str]:
    pg_ctl = pg_ctl or find_pg_ctl()
    if pg_ctl is None:
        raise PostgresError(NOT_INSTALLED)
    directory = directory.absolute()
    home = directory / "server"
    home.mkdir(mode=0o700, parents=True)
    executable, owner = str(pg_ctl), None
    if os.geteuid() == 0:
        executable, owner = _pg_ctl_as_postgres(pg_ctl, directory, home)
    executor = _Executor(
        executable=executable,
        host=HOST,
        port=port_for.get_port(None),
        datadir=str(home / "data"),
        unixsocketdir=str(home),
        logfile=str(home / "server.log"),
        startparams="-w",
        dbname=DATABASE,
        user=SUPERUSER,
        password=secrets.token_hex(16),
        postgres_options=SETTINGS,
    )
    executor.owner = owner
    try:
        executor.start()  # returns once the port is open, which may be before the server is ready
        if executor.process and executor.process.wait(timeout=90):  # pg_ctl start -w: 0 = ready
            raise RuntimeError(f"pg_ctl start -w exited with {executor.process.returncode}")
    except Exception as exc:
        log = home / "server.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(none)"
        raise PostgresError(f"PostgreSQL did not start ({exc!r}); server log:\n{tail}") from exc
    try:
        password = secrets.token_hex(16)
        _create_role_and_database(executor, password)
        yield f"postgresql+psycopg://{ROLE}:{password}@{HOST}:{executor.port}/{DATABASE}"
    finally:
        executor.stop()
        executor.clean_directory()


def _create_role_and_database(executor: PostgreSQLExecutor, password: str) -> None:
    admin = f"host={HOST} port={executor.port} user={SUPERUSER} dbname=postgres"
    with psycopg.connect(admin, password=executor.password, autocommit=True) as conn:
        role, secret = sql.Identifier(ROLE), sql.Literal(password)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, secret))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), role))
    # The role logs in over TCP with its password and may create btree_gist (needed for
    # EXCLUDE USING gist); rolled back, so its database stays empty.
    login = f"host={HOST} port={executor.port} user={ROLE} dbname={DATABASE}"
    with psycopg.connect(login, password=password) as conn:
        conn.execute("CREATE EXTENSION btree_gist")
        conn.rollback()
