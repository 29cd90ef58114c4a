"""This machine's side of the sandbox: can it sandbox, which paths the interpreter needs,
which uid each user gets, who owns the homes, and how limits are enforced."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from werkhub.sandbox.spec import (
    SETPRIV,
    Limits,
    SandboxSpec,
    build_argv,
    cgroup_v1_files,
    cgroup_v2_files,
    choose_uid,
    describe,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu")
#: host folders every sandbox sees read-only
SYSTEM = ("/usr", "/etc")
#: the uid a probe runs as when werkhub is root (nobody)
PROBE_UID = 65534


@dataclass(frozen=True)
class Probe:
    """Whether this machine can sandbox user code; ``reason`` says why not."""

    ok: bool
    reason: str = ""
    as_root: bool = False


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def probe(timeout: float = 15) -> Probe:
    """Find bubblewrap and run a trivial sandbox built like the real ones."""
    as_root = os.geteuid() == 0
    bwrap = bwrap_path()
    if bwrap is None:
        return Probe(False, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    if as_root and not os.access(SETPRIV, os.X_OK):
        return Probe(False, f"{SETPRIV} (util-linux) is missing: it drops root in sandboxes")
    with tempfile.TemporaryDirectory(prefix="werkhub-probe-") as home:
        spec = SandboxSpec(
            command=("/bin/sh", "-c", "test -r /proc/self/status"),
            home=home,
            **system_layout(),
            bwrap=bwrap,
            uid=PROBE_UID if as_root else None,
            gid=PROBE_UID if as_root else None,
        )
        try:
            done = subprocess.run(
                build_argv(spec),
                capture_output=True,
                text=True,
                timeout=timeout,
                env={"PATH": "/usr/bin:/bin"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Probe(False, f"bubblewrap could not run a test sandbox: {exc}", as_root)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
        return Probe(
            False,
            f"bubblewrap could not start a test sandbox (exit {done.returncode}: {why[0]}); "
            "unprivileged user namespaces may be disabled (sysctl "
            "kernel.unprivileged_userns_clone / user.max_user_namespaces)",
            as_root,
        )
    return Probe(True, "", as_root)


def system_layout() -> dict[str, tuple]:
    """``system`` folders and ``symlinks`` of this machine's root (merged /usr or not)."""
    system = list(SYSTEM)
    links: list[tuple[str, str]] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            links.append((os.readlink(name), name))
        elif os.path.isdir(name):
            system.append(name)
    return {"system": tuple(system), "symlinks": tuple(links)}


def python_paths() -> list[str]:
    """What the interpreter of this installation reads: its prefix, the virtual
    environment and the folders that ``.pth`` files (editable installs) add."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    for site in {p for p in sys.path if p.endswith("site-packages")}:
        for pth in Path(site).glob("*.pth"):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                for line in pth.read_text().splitlines():
                    line = line.strip()
                    if line.startswith("/") and os.path.isdir(line):
                        paths.add(os.path.realpath(line))
    kept: list[str] = []
    for path in sorted(paths, key=len):  # a folder inside another is already there
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return sorted(p for p in kept if not any(p == s or p.startswith(s + "/") for s in SYSTEM))


class UidRegistry:
    """Each user's own uid, kept in ``path`` (JSON, owner-only) so it never changes and
    never collides; hub and service share it under a file lock."""

    def __init__(self, path: Path, base: int, count: int) -> None:
        self.path, self.base, self.count = path, base, count

    def uid_for(self, name: str) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            raw = handle.read()
            assigned: dict[str, int] = json.loads(raw) if raw.strip() else {}
            if name in assigned:
                return assigned[name]
            uid = choose_uid(name, assigned, self.base, self.count, uid_in_use)
            assigned[name] = uid
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(assigned, indent=1, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
            return uid


def uid_in_use(uid: int) -> bool:
    """Whether an OS account or group has this id, or a process runs as it (another
    install's sandbox, say): such a uid is never handed to a sandbox."""
    return os_account(uid) or uid in process_uids()


def process_uids() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.add(entry.stat().st_uid)
            except OSError:
                continue
    return found


def os_account(uid: int) -> bool:
    """Whether an account or group of the operating system has this id."""
    import grp

    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False


def own_folder(folder: Path, uid: int, gid: int) -> None:
    """``folder`` (made if missing) belongs to ``uid`` alone (0700); a folder that
    belonged to someone else (an install from before sandboxes) is handed over whole."""
    folder.mkdir(parents=True, exist_ok=True)
    info = folder.lstat()
    if (info.st_uid, info.st_gid) != (uid, gid):
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)
        os.lchown(folder, uid, gid)
    os.chmod(folder, 0o700)


def passable_to(folder: Path, stop: Path) -> None:
    """Let other uids pass through (not list) the folders from ``folder`` up to ``stop``
    (execute bit only): a job's run folder below werkhub's private reports folder must be
    reachable by the uid that owns it. Only werkhub's own folders inside ``stop`` change."""
    stop, probe = stop.resolve(), folder.resolve()
    if not probe.is_relative_to(stop):
        return
    while True:
        info = probe.lstat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o011 != 0o011:
            os.chmod(probe, (info.st_mode & 0o7777) | 0o011)
        if probe == stop:
            return
        probe = probe.parent


def closed_folders(paths: Iterable[str | Path], uid: int) -> list[str]:
    """Folders above ``paths`` that ``uid`` (no groups) may not pass through: the
    interpreter, the virtual environment and the state folder must be reachable when user
    code runs under its own uid without bubblewrap."""
    closed: set[str] = set()
    for path in paths:
        probe = Path(path).resolve().parent
        while True:
            try:
                info = probe.stat()
            except OSError:
                break
            passable = info.st_mode & 0o001 or (info.st_uid == uid and info.st_mode & 0o100)
            if not passable:
                closed.add(str(probe))
            if probe == probe.parent:
                break
            probe = probe.parent
    return sorted(closed)


@dataclass
class Enforcement:
    """How limits are enforced for one sandbox: cgroups joined before exec, else ulimits."""

    limits: Limits
    cgroups: list[Path] = field(default_factory=list)
    how: str = "none"

    @property
    def note(self) -> str:
        return describe(self.limits, self.how)

    def preexec(self) -> Callable[[], None]:
        procs = [str(folder / "cgroup.procs") for folder in self.cgroups]
        rlimits = [] if self.cgroups else ulimit_plan(self.limits)

        def apply() -> None:
            for path in procs:  # the child joins before it execs bubblewrap
                with open(path, "w") as handle:
                    handle.write(str(os.getpid()))
            for which, value in rlimits:
                resource.setrlimit(which, (value, value))

        return apply

    def release(self, wait_s: float = 5.0) -> None:
        """Remove the cgroups once the sandbox has ended; what is still in them (a
        sandbox's processes exit a moment after bubblewrap does) is killed first."""
        ends = time.monotonic() + wait_s
        for folder in self.cgroups:
            while folder.exists():
                try:
                    folder.rmdir()
                    break
                except OSError:
                    if time.monotonic() > ends:
                        break
                with contextlib.suppress(OSError, ValueError):
                    for pid in (folder / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.05)


def sweep_cgroups(
    root: Path = CGROUP_ROOT, older_than_s: float = 600, prefix: str = ""
) -> list[Path]:
    """Remove werkhub's cgroups left behind by a crash (a hub or service killed before it
    released them): those with no process in them, made more than ``older_than_s`` ago
    (a cgroup made a moment ago may not have been joined yet: another werkhub on the
    same machine may be starting a sandbox). Returns what was removed."""
    parents = [root / "werkhub", *(root / c / "werkhub" for c in V1_CONTROLLERS)]
    removed: list[Path] = []
    now = time.time()
    for parent in parents:
        try:
            leaves = [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix)]
        except OSError:
            continue
        for leaf in leaves:
            try:
                if now - leaf.stat().st_mtime < older_than_s:
                    continue
                procs = leaf / "cgroup.procs"
                if procs.exists() and procs.read_text().split():
                    continue  # still in use
                leaf.rmdir()
                removed.append(leaf)
            except OSError:
                continue  # in use after all, or gone meanwhile
    return removed


def ulimit_plan(limits: Limits) -> list[tuple[int, int]]:
    plan = []
    if limits.memory_bytes:
        plan.append((resource.RLIMIT_AS, limits.memory_bytes))
    if limits.processes:
        plan.append((resource.RLIMIT_NPROC, limits.processes))
    if limits.cpu_seconds:
        plan.append((resource.RLIMIT_CPU, limits.cpu_seconds))
    return plan


def enforce(limits: Limits, label: str, root: Path = CGROUP_ROOT) -> Enforcement:
    """Make cgroups for ``limits`` where this process may (root: v2 at the root of a
    unified hierarchy, else the v1 memory/pids/cpu controllers); ulimits otherwise."""
    if not any((limits.memory_bytes, limits.cpu_cores, limits.processes)):
        how = "ulimit" if limits.cpu_seconds else "none"
        return Enforcement(limits, how=how)
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    made: list[Path] = []
    try:
        if (root / "cgroup.controllers").is_file():
            made.append(_v2_leaf(root, name, limits))
            how = "cgroup v2"
        elif all((root / c).is_dir() for c in V1_CONTROLLERS):
            for controller, files in cgroup_v1_files(limits).items():
                folder = root / controller / "werkhub" / name
                folder.mkdir(parents=True)
                made.append(folder)
                for file, value in files.items():
                    _write(folder / file, value, optional=file.startswith("memory.memsw"))
            how = "cgroup v1"
        else:
            raise OSError("no cgroup hierarchy with memory, pids and cpu")
    except OSError as exc:
        Enforcement(limits, made).release()
        return Enforcement(limits, how=f"ulimit (cgroups not writable: {exc.strerror or exc})")
    return Enforcement(limits, made, how)


def _v2_leaf(root: Path, name: str, limits: Limits) -> Path:
    parent = root / "werkhub"
    parent.mkdir(exist_ok=True)
    wanted = " ".join(f"+{c}" for c in ("memory", "pids", "cpu"))
    for folder in (root, parent):
        _write(folder / "cgroup.subtree_control", wanted)
    leaf = parent / name
    leaf.mkdir()
    for file, value in cgroup_v2_files(limits).items():
        _write(leaf / file, value, optional=file == "memory.swap.max")
    return leaf


def _write(path: Path, value: str, optional: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not optional:
            raise
