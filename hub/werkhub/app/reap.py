"""What a hub that had to be killed leaves behind: its proxy and services run in sessions
of their own (JupyterHub starts them so), so killing the hub's process group does not end
them. ``werkhub up`` then ends every process that belongs to its state folder: started
with ``WERKHUB_STATE`` naming it, or working inside it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _belongs(pid: str, root: str) -> bool:
    proc = Path("/proc") / pid
    try:
        cwd = os.readlink(proc / "cwd")
    except OSError:
        cwd = ""
    if cwd == root or cwd.startswith(root + "/"):
        return True
    try:
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"WERKHUB_STATE={root}".encode() in environ


def processes_of(state_root: Path) -> list[int]:
    """Live processes (other than this one) that belong to ``state_root``."""
    root = str(state_root.resolve())
    mine = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != mine and _belongs(entry, root):
            found.append(int(entry))
    return found


def reap(state_root: Path, grace: float = 5.0) -> list[int]:
    """SIGTERM every process of ``state_root``, SIGKILL what is left after ``grace``
    seconds; returns the pids that were signalled."""
    signalled = processes_of(state_root)
    for pid in signalled:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    ends = time.monotonic() + grace
    while time.monotonic() < ends and processes_of(state_root):
        time.sleep(0.1)
    for pid in processes_of(state_root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return signalled
