"""What an ended hub leaves behind: its proxy and services run in sessions of their own
(JupyterHub starts them so), so neither the hub's end nor killing its process group ends
them, and a hub that exits while it starts (a service too slow to answer) cleans up
nothing. ``werkhub up`` is their subreaper: they become its children when the hub ends, and
it ends them (:func:`end_children`) where the hub could not clean up itself. A hub it
had to kill: it also ends every process that belongs to its state folder (:func:`reap`),
started with ``WERKHUB_STATE`` naming it, or working inside it."""

from __future__ import annotations

import contextlib
import ctypes
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
        _signal(pid, signal.SIGTERM)
    ends = time.monotonic() + grace
    while time.monotonic() < ends and processes_of(state_root):
        time.sleep(0.1)
    for pid in processes_of(state_root):
        _signal(pid, signal.SIGKILL)
    return signalled


# -- orphans adopted by ``werkhub up`` -------------------------------------------------
#: prctl(2): orphans below this process are re-parented to it rather than to init
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the one that inherits every orphan below it: when the hub ends
    (however it ends) its proxy and services, in sessions of their own, become children of
    ``werkhub up``, which ends them with :func:`end_children` where the hub could not clean
    up itself. False where Linux does not offer it (the state-folder :func:`reap` still
    applies there)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children() -> list[int]:
    """This process's children, exited ones not yet collected included."""
    found: set[int] = set()
    tasks = Path("/proc/self/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(found)


def collect(skip: int | None = None) -> list[int]:
    """Collect the exit status of every child that has ended (but ``skip``, whose
    ``Popen`` collects its own); the pids still alive."""
    alive = []
    for pid in children():
        if pid == skip:
            continue
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if not done:
            alive.append(pid)
    return alive


def end_children(grace: float = 5.0) -> list[int]:
    """SIGTERM every child of this process (what the ended hub left, and what those leave
    in turn as they end), SIGKILL what is still alive after ``grace`` seconds; every exit
    status is collected. Returns the pids signalled."""
    signalled: list[int] = []
    ends = time.monotonic() + grace
    while alive := collect():
        if time.monotonic() >= ends + grace:
            break  # SIGKILLed and still there (a process stuck in the kernel): leave it
        if time.monotonic() >= ends:
            for pid in alive:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.05)
            continue
        for pid in alive:
            if pid not in signalled:
                signalled.append(pid)
                _signal(pid, signal.SIGTERM)
        time.sleep(0.05)
    return signalled


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
