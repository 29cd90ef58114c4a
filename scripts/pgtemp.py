#!/usr/bin/env python3
"""Throwaway PostgreSQL servers for tests and benchmarks (stdlib only).

    python scripts/pgtemp.py start DIR   # new cluster in DIR; prints its SQLAlchemy URL
    python scripts/pgtemp.py url DIR     # prints the URL of the running cluster in DIR
    python scripts/pgtemp.py stop DIR    # fast shutdown, waits until the server is gone

`start` uses the newest PostgreSQL found under /usr/lib/postgresql/*/bin (Debian's layout;
set PGTEMP_BINDIR to override). The server listens on 127.0.0.1 only, on a free TCP port,
plus a Unix socket in DIR/socket; fsync stays on. It creates the role `werkhub` (random
password) owning the database `werkhub`, and checks that this role can create the trusted
extension btree_gist. Its only line on stdout is
`postgresql+psycopg://werkhub:PASSWORD@127.0.0.1:PORT/werkhub`; everything else goes to
stderr. Errors exit with status 2.

PostgreSQL refuses to run as root: as root the server runs as the `postgres` system user
(from Debian's postgresql package) and DIR is handed to that user. When a parent of DIR
is closed to that user (pytest's /tmp/pytest-of-root is mode 0700), the server processes
get the single capability CAP_DAC_READ_SEARCH so that they can reach DIR.

Layout of DIR: data/ (PGDATA), socket/, server.log, initdb.log, pgtemp.json (URL, port;
mode 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "werkhub"
DB_ROLE = "werkhub"
SERVER_USER_WHEN_ROOT = "postgres"
HOST = "127.0.0.1"
STATE_FILE = "pgtemp.json"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes including the trailing NUL
CAP_DAC_READ_SEARCH = 2
NOT_INSTALLED = (
    "PostgreSQL is not installed: install the postgresql package, or run make test as root"
)

# Settings for a small (2-core) test box. Durability stays as in production.
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "max_connections": "200",
    "shared_buffers": "128MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_worker_processes": "4",
    "max_parallel_workers": "2",
    "max_parallel_workers_per_gather": "1",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_min_messages": "warning",
}


class PgTempError(Exception):
    """A failure reported to the user (exit status 2)."""


def log(msg: str) -> None:
    print(f"pgtemp: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- binaries and users


def _major(bindir: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_bindir() -> Path:
    """The bin directory of the newest installed PostgreSQL with a server."""
    needed = ("initdb", "pg_ctl", "postgres", "psql")
    override = os.environ.get("PGTEMP_BINDIR")
    candidates = (
        [Path(override)]
        if override
        else sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    )
    if not override and (initdb := shutil.which("initdb")):  # non-Debian layouts
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in needed):
            return bindir
    raise PgTempError(NOT_INSTALLED)


@dataclass(frozen=True)
class ServerUser:
    """Who runs the server: the caller, or `postgres` when the caller is root."""

    name: str
    uid: int
    gid: int
    home: str
    switch: bool  # run commands through setpriv
    cap_dac_read_search: bool = False

    def wrap(self, argv: Sequence[str]) -> list[str]:
        if not self.switch:
            return list(argv)
        cmd = [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
        ]
        if self.cap_dac_read_search:
            cmd += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        return [*cmd, "--", *argv]

    def env(self) -> dict[str, str]:
        # A clean environment: no PG* variables of the caller leak into the tools.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PG") and k not in ("LANG", "LANGUAGE") and not k.startswith("LC_")
        }
        env["LC_ALL"] = "C.UTF-8"
        if self.switch:
            env.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        return env


def server_user(directory: Path | None = None) -> ServerUser:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return ServerUser(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir, switch=False)
    try:
        pw = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
    except KeyError:
        raise PgTempError(
            f"running as root, but there is no '{SERVER_USER_WHEN_ROOT}' system user to run "
            "the server (PostgreSQL refuses to run as root); install the postgresql package"
        ) from None
    if shutil.which("setpriv") is None:
        raise PgTempError("running as root needs setpriv (util-linux) to drop to postgres")
    user = ServerUser(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, switch=True)
    if directory is not None and not _can_reach(user, directory):
        if not _has_bounding_cap(CAP_DAC_READ_SEARCH):
            raise PgTempError(
                f"user {user.name} cannot reach {directory} (a parent directory is closed to "
                "it); choose a directory under a world-traversable path such as /tmp"
            )
        user = ServerUser(
            pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, switch=True, cap_dac_read_search=True
        )
    return user


def _can_reach(user: ServerUser, directory: Path) -> bool:
    probe = user.wrap(["test", "-x", str(directory), "-a", "-w", str(directory)])
    return subprocess.run(probe, env=user.env(), cwd="/", check=False).returncode == 0


def _has_bounding_cap(cap: int) -> bool:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def run_as(
    user: ServerUser,
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    env_extra: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    env = user.env()
    env.update(env_extra or {})
    return subprocess.run(
        user.wrap(argv),
        input=stdin,
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def chown_tree(path: Path, user: ServerUser) -> None:
    if not user.switch:
        return
    os.chown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def read_state(directory: Path) -> dict[str, object]:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        raise PgTempError(f"{directory} holds no pgtemp cluster (no {STATE_FILE})") from None
    except (OSError, ValueError) as exc:
        raise PgTempError(f"cannot read {directory / STATE_FILE}: {exc}") from None


def postmaster_pid(datadir: Path) -> int | None:
    """PID from postmaster.pid if that process is alive."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------- commands


def start(directory: Path) -> str:
    bindir = find_bindir()
    directory = directory.absolute()
    if directory.exists() and any(directory.iterdir()):
        raise PgTempError(f"{directory} is not empty; start needs a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    user = server_user()
    chown_tree(directory, user)
    user = server_user(directory)
    if user.cap_dac_read_search:
        log(f"a parent of {directory} is closed to {user.name}: server gets CAP_DAC_READ_SEARCH")

    datadir = directory / "data"
    socket_dir = directory / "socket"
    own_socket_dir = len(str(socket_dir / ".s.PGSQL.65535")) <= SOCKET_PATH_MAX
    if own_socket_dir:
        socket_dir.mkdir(mode=0o700)
    else:  # path too long for a Unix socket: use a short private directory instead
        socket_dir = Path(tempfile.mkdtemp(prefix="pgtemp-sock-"))
        log(f"{directory} is too long for a Unix socket path; socket in {socket_dir}")
    chown_tree(socket_dir, user)

    t0 = time.monotonic()
    initdb = run_as(
        user,
        [
            str(bindir / "initdb"),
            f"--pgdata={datadir}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--no-sync",  # the cluster is throwaway; the server itself runs with fsync on
            "--no-instructions",
        ],
    )
    (directory / "initdb.log").write_text(initdb.stdout + initdb.stderr)
    if initdb.returncode != 0:
        raise PgTempError(f"initdb failed:\n{tail(directory / 'initdb.log')}")
    t_initdb = time.monotonic() - t0

    conf = datadir / "postgresql.conf"
    with conf.open("a") as f:
        f.write("\n# pgtemp\ninclude 'pgtemp.conf'\n")
    logfile = directory / "server.log"
    logfile.touch()
    chown_tree(logfile, user)

    port = 0
    for attempt in range(5):  # the port may be taken between choosing and binding it
        port = free_port()
        settings = {
            **SERVER_SETTINGS,
            "port": str(port),
            "unix_socket_directories": str(socket_dir),
        }
        pgtemp_conf = datadir / "pgtemp.conf"
        pgtemp_conf.write_text("".join(f"{k} = {sql_literal(v)}\n" for k, v in settings.items()))
        chown_tree(pgtemp_conf, user)
        size_before = logfile.stat().st_size
        started = run_as(
            user,
            [
                str(bindir / "pg_ctl"),
                "start",
                f"--pgdata={datadir}",
                f"--log={logfile}",
                "--wait",
                f"--timeout={START_TIMEOUT_S}",
                "--silent",
            ],
            timeout=START_TIMEOUT_S + 10,
        )
        if started.returncode == 0:
            break
        new_log = logfile.read_text(errors="replace")[size_before:]
        if "could not bind" in new_log and attempt < 4:
            log(f"port {port} was taken, trying another")
            continue
        raise PgTempError(
            f"the server did not start (pg_ctl exit {started.returncode}):\n"
            f"{started.stdout}{started.stderr}\n--- {logfile} (tail) ---\n{tail(logfile)}"
        )
    t_server = time.monotonic() - t0 - t_initdb

    password = secrets.token_hex(16)
    setup = run_as(
        user,
        [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir),
         "-p", str(port), "-d", "postgres"],
        stdin=(
            f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD {sql_literal(password)};\n"
            f"CREATE DATABASE {DB_NAME} OWNER {DB_ROLE};\n"
        ),
    )  # fmt: skip
    if setup.returncode != 0:
        _stop_quietly(user, bindir, datadir)
        raise PgTempError(f"creating role and database failed:\n{setup.stderr}")

    # Log in as the new role over TCP with its password, and check that it may create the
    # trusted extension btree_gist (needed for EXCLUDE USING gist); rolled back afterwards.
    check = run_as(
        user,
        [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST,
         "-p", str(port), "-U", DB_ROLE, "-d", DB_NAME],
        stdin="BEGIN;\nCREATE EXTENSION btree_gist;\nROLLBACK;\n",
        env_extra={"PGPASSWORD": password},
    )  # fmt: skip
    if check.returncode != 0:
        _stop_quietly(user, bindir, datadir)
        hint = ""
        if "btree_gist" in check.stderr and "not available" in check.stderr:
            hint = "\n(btree_gist ships with postgresql-contrib / postgresql-NN on Debian)"
        raise PgTempError(
            f"role {DB_ROLE} cannot log in or cannot create btree_gist:\n{check.stderr}{hint}"
        )

    url = f"postgresql+psycopg://{DB_ROLE}:{password}@{HOST}:{port}/{DB_NAME}"
    state = {
        "url": url,
        "port": port,
        "bindir": str(bindir),
        "datadir": str(datadir),
        "socket_dir": str(socket_dir),
        "own_socket_dir": own_socket_dir,
        "server_user": user.name,
    }
    state_path = directory / STATE_FILE
    fd = os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    total = time.monotonic() - t0
    log(
        f"PostgreSQL {_major(bindir)[0]} on {HOST}:{port} as {user.name} "
        f"(initdb {t_initdb:.2f}s, server {t_server:.2f}s, total {total:.2f}s)"
    )
    return url


def _stop_quietly(user: ServerUser, bindir: Path, datadir: Path) -> None:
    run_as(user, [str(bindir / "pg_ctl"), "stop", f"--pgdata={datadir}", "-m", "immediate", "-w"])


def url(directory: Path) -> str:
    directory = directory.absolute()
    state = read_state(directory)
    if postmaster_pid(Path(str(state["datadir"]))) is None:
        raise PgTempError(f"the cluster in {directory} is not running")
    return str(state["url"])


def stop(directory: Path) -> None:
    directory = directory.absolute()
    state = read_state(directory)
    datadir = Path(str(state["datadir"]))
    port = int(str(state["port"]))
    pid = postmaster_pid(datadir)
    if pid is None:
        log(f"the cluster in {directory} is not running")
    else:
        t0 = time.monotonic()
        bindir = Path(str(state["bindir"]))
        user = server_user(directory)
        pg_ctl = [str(bindir / "pg_ctl"), "stop", f"--pgdata={datadir}", "--wait"]
        done = run_as(
            user,
            [*pg_ctl, "-m", "fast", f"--timeout={STOP_TIMEOUT_S}"],
            timeout=STOP_TIMEOUT_S + 10,
        )
        if done.returncode != 0:
            log(f"fast shutdown failed ({done.stderr.strip()}); trying immediate")
            done = run_as(user, [*pg_ctl, "-m", "immediate", "--timeout=30"], timeout=40)
        _wait_gone(pid, port)
        log(f"stopped {HOST}:{port} in {time.monotonic() - t0:.2f}s")
    if not state.get("own_socket_dir", True):
        shutil.rmtree(str(state["socket_dir"]), ignore_errors=True)


def _wait_gone(pid: int, port: int, timeout: float = 30) -> None:
    """Wait until the postmaster has exited and the port is closed; SIGKILL as a last resort."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) and not port_open(port):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    raise PgTempError(f"postmaster {pid} did not stop within {timeout:.0f}s; killed it")


def _alive(pid: int) -> bool:
    """True while the process runs; an exited process waiting to be reaped counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


USAGE = "usage: pgtemp.py {start|stop|url} DIR"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ("start", "stop", "url"):
        print(USAGE, file=sys.stderr)
        return 2
    command, directory = args[0], Path(args[1])
    try:
        if command == "start":
            print(start(directory), flush=True)
        elif command == "url":
            print(url(directory), flush=True)
        else:
            stop(directory)
    except PgTempError as exc:
        print(f"pgtemp {command}: {exc}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired as exc:
        print(f"pgtemp {command}: {exc.cmd[0]} timed out after {exc.timeout}s", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
