"""Processes on this machine that belong to a test's folder (pure /proc reading)."""

from __future__ import annotations

import os
from pathlib import Path


def processes_in(folder: Path) -> list[str]:
    """Live processes whose working directory or command line lies in ``folder``
    ("PID: command line"): the hub, proxy and services run in their state folder, user
    servers in their homes; the postmaster names its data directory on its command line and
    its children (which retitle themselves) run with it as their working directory."""
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
