"""One Flower process of a federation: started in a person's sandbox (bubblewrap, their
uid, limits), or as a plain child where werkhub has no sandbox (a development install);
it dies with werkhub and logs to a file of werkhub's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkhub.sandbox.children import spawn_logged
from werkhub.sandbox.prepare import prepare


@dataclass
class Launch:
    """What one process needs (``home``: its writable scratch home, never the person's)."""

    user: str
    command: list[str]
    home: Path
    env: dict[str, str]
    label: str
    log: Path
    writable: list[Path] = field(default_factory=list)
    read_only_at: list[tuple[Path, str]] = field(default_factory=list)
    writable_at: list[tuple[Path, str]] = field(default_factory=list)
    unshare_net: bool = False
    gpu_indexes: tuple[int, ...] = ()


@dataclass
class Managed:
    proc: asyncio.subprocess.Process
    release: Callable[[], None] | None
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


def prepared(settings: Mapping[str, Any], launch: Launch) -> tuple[list[str], dict[str, Any], Any]:
    """argv, the options of ``create_subprocess_exec`` and the release of the limits."""
    if not settings:
        launch.home.mkdir(parents=True, exist_ok=True)
        env = {**launch.env, "HOME": str(launch.home), "USER": launch.user}
        return launch.command, {"cwd": str(launch.home), "env": env}, None
    done = prepare(
        settings,
        launch.user,
        command=launch.command,
        home=launch.home,
        env=launch.env,
        label=launch.label,
        cwd=launch.home,
        writable=launch.writable,
        gpu_indexes=launch.gpu_indexes,
        read_only_at=launch.read_only_at,
        writable_at=launch.writable_at,
        unshare_net=launch.unshare_net,
    )
    options = {"cwd": done.cwd, "env": done.env, "preexec_fn": done.preexec}
    return done.argv, options, done.release


async def spawn(settings: Mapping[str, Any], launch: Launch) -> Managed:
    argv, options, release = await asyncio.to_thread(prepared, settings, launch)
    proc = await spawn_logged(argv, options, release, launch.log)
    return Managed(proc, release, launch.log)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, parents first (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


#: the programs that leave gracefully on SIGTERM (the rest ends with them)
LEADERS = ("flower-supernode", "flower-superlink")


def _leader(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(a.decode(errors="replace")) in LEADERS for a in argv[:2])


def terminate_inside(pid: int) -> int:
    """SIGTERM to the SuperNode or SuperLink at or below ``pid`` (not to bubblewrap, which
    would SIGKILL it, nor to its relay, which it still needs): a SuperNode then tells its
    SuperLink it leaves (Flower otherwise keeps it "online" for two heartbeats and refuses
    a new SuperNode with its key meanwhile). How many it signalled."""
    signalled = 0
    for child in [pid, *descendants(pid)]:
        if _leader(child):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGTERM)
                signalled += 1
    return signalled


async def stop(managed: Managed, grace: float = 10.0, kill: bool = False) -> None:
    """SIGTERM to the processes inside (SIGKILL to the group with ``kill``), SIGKILL to
    the group after ``grace``."""
    proc = managed.proc
    if proc.returncode is None:
        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        elif not await asyncio.to_thread(terminate_inside, proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything it left in its group
    if managed.release is not None:
        release, managed.release = managed.release, None
        await asyncio.to_thread(release)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def chown_tree(paths: Iterable[Path], uid: int | None) -> None:
    """Hand ``paths`` (and what is inside) to ``uid`` (root-run werkhub only)."""
    if uid is None or os.geteuid() != 0:
        return
    for top in paths:
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, uid)
        os.lchown(top, uid, uid)
