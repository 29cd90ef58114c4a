"""Helpers for the postgres tier: drive scripts/pgtemp.py as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PGTEMP = ROOT / "scripts" / "pgtemp.py"


def pgtemp(
    command: str, directory: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``pgtemp.py COMMAND DIRECTORY`` and return its result (never raises on failure)."""
    return subprocess.run(
        [sys.executable, str(PGTEMP), command, str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def port_open(port: int) -> bool:
    with closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_in(folder: Path) -> list[str]:
    """Live processes whose working directory or command line lies in ``folder``.

    The postmaster names its data directory on its command line; its children (which retitle
    themselves, e.g. "postgres: checkpointer") run with the data directory as cwd.
    """
    marker = str(folder.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            try:
                cwd = os.readlink(entry / "cwd")
            except PermissionError:
                cwd = ""
        except OSError:  # gone, or a zombie
            continue
        if cwd.startswith(marker) or marker in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found
