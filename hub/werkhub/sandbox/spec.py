"""Pure rules of the sandbox: what one sandboxed process may see, as a ``bwrap`` argv.

The sandbox starts from an empty root (a tmpfs made by bubblewrap) and binds in only:

* the system folders read-only (``/usr``, ``/etc``, the ``/bin``-style links or folders),
* the interpreter, the virtual environment and the package sources read-only,
* the user's home (and a job's run folder) writable,
* a fresh ``/proc`` of its own PID namespace, a minimal ``/dev`` plus the booked
  ``/dev/nvidia*`` devices and the NVIDIA control devices, private ``/tmp``;
* optionally, host paths at *other* paths inside (a federation party's data folder at
  ``/data``, read-only) and a network namespace of its own (``--unshare-net``: only a
  loopback, which bubblewrap brings up; the way out is what the caller binds in).

Anything ``hidden`` (the state folder, the configuration file) is covered by an empty
tmpfs (or ``/dev/null`` for a file) where a read-only tree would otherwise show it; the
home is bound after that, so it stays visible inside a hidden state folder.

Run as root, bubblewrap does the mounts and ``setpriv`` then drops to the user's own
unprivileged uid with no capabilities, no supplementary groups and ``no_new_privs``; run
as an ordinary user, bubblewrap uses an unprivileged user namespace (``--unshare-user``).
A root-run sandbox sees ``/etc/passwd`` and ``/etc/group`` with an entry for that uid
(:func:`account_files`), so the terminal, ``getpass`` and ``~`` know the person.

The environment is never put on the command line (``/proc/PID/cmdline`` is readable by
every local user): the caller passes exactly the spawner's environment to ``execve`` and
bubblewrap hands it on unchanged.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from werkhub.errors import Unavailable

#: NVIDIA control devices bound in whenever they exist (never a GPU by themselves)
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
#: folder of MIG capability devices (``/dev/nvidia-caps/nvidia-capN``)
CAPS_FOLDER = "nvidia-caps"
SETPRIV = "/usr/bin/setpriv"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class SandboxError(Unavailable, RuntimeError):
    """A sandbox cannot be built or started; the message says why (it names host paths:
    API callers get a generic answer, the log gets the message)."""

    public = False


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (None: not limited)."""

    memory_bytes: int | None = None
    cpu_cores: float | None = None
    processes: int | None = None
    #: CPU seconds (ulimit only; a job's deadline times its cores)
    cpu_seconds: int | None = None


@dataclass(frozen=True)
class SandboxSpec:
    """Everything that decides one sandboxed process."""

    command: tuple[str, ...]
    home: str
    cwd: str = ""
    #: further writable folders (a job's run folder)
    writable: tuple[str, ...] = ()
    #: host folders bound read-only at the same path (interpreter, venv, sources)
    read_only: tuple[str, ...] = ()
    #: system folders bound read-only at the same path
    system: tuple[str, ...] = ("/usr", "/etc")
    #: (target, link): e.g. ("usr/bin", "/bin") on a merged-/usr system
    symlinks: tuple[tuple[str, str], ...] = ()
    #: folders and files that must stay absent even below a read-only folder
    hidden_dirs: tuple[str, ...] = ()
    hidden_files: tuple[str, ...] = ()
    #: (host path, path inside): the booked and control devices
    devices: tuple[tuple[str, str], ...] = ()
    #: (host file, path inside) bound read-only over the system folders (account files)
    files: tuple[tuple[str, str], ...] = ()
    #: (host path, path inside): bound read-only / writable at another path, last
    read_only_at: tuple[tuple[str, str], ...] = ()
    writable_at: tuple[tuple[str, str], ...] = ()
    #: a network namespace of its own (loopback only)
    unshare_net: bool = False
    #: run the command as this uid/gid (bubblewrap runs as root); None: user namespace
    uid: int | None = None
    gid: int | None = None
    bwrap: str = "bwrap"
    setpriv: str = SETPRIV


@dataclass
class _Tree:
    """What already exists inside the sandbox while the argv is built."""

    #: path -> "host" (shows the host's folder) or "empty" (tmpfs or made folder)
    mounts: dict[str, str] = field(default_factory=lambda: {"/": "empty"})

    def covering(self, path: str) -> str:
        probe = path
        while True:
            if probe in self.mounts:
                return self.mounts[probe]
            if probe == "/":
                return "empty"
            probe = posixpath.dirname(probe)

    def parents(self, path: str) -> list[str]:
        """``--dir`` operations for the parents of ``path`` that do not exist yet (mode
        0755: bubblewrap would make implicit parents 0700, unreadable to the user)."""
        missing: list[str] = []
        probe = posixpath.dirname(path)
        while probe != "/" and probe not in self.mounts:
            missing.append(probe)
            probe = posixpath.dirname(probe)
        if probe != "/" and self.mounts[probe] == "host":
            return []  # below a host folder: the parents exist
        args: list[str] = []
        for folder in reversed(missing):
            args += ["--perms", "0755", "--dir", folder]
            self.mounts[folder] = "empty"
        return args


def normal(path: str) -> str:
    if not path.startswith("/"):
        raise SandboxError(f"sandbox paths must be absolute (got {path!r})")
    return posixpath.normpath(path)


def by_depth(paths: Iterable[str]) -> list[str]:
    unique = {normal(p) for p in paths}
    return sorted(unique, key=lambda p: (p.count("/"), p))


def within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def build_argv(spec: SandboxSpec) -> list[str]:
    """The full ``bwrap`` command line of ``spec`` (the environment is not part of it)."""
    if not spec.command:
        raise SandboxError("a sandbox needs a command")
    if (spec.uid is None) != (spec.gid is None):
        raise SandboxError("uid and gid go together")
    if spec.uid == 0:
        raise SandboxError("user code never runs as root: give an unprivileged uid")
    home = normal(spec.home)
    tree = _Tree()
    argv = [spec.bwrap, "--die-with-parent", "--new-session", "--unshare-pid"]
    argv += ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if spec.uid is None:
        argv.append("--unshare-user")
    if spec.unshare_net:
        argv.append("--unshare-net")
    for folder in by_depth(spec.system):
        argv += [*tree.parents(folder), "--ro-bind", folder, folder]
        tree.mounts[folder] = "host"
    for target, link in spec.symlinks:
        argv += ["--symlink", target, normal(link)]
    for source, target in spec.files:
        argv += [*tree.parents(normal(target)), "--ro-bind", normal(source), normal(target)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    tree.mounts.update({"/proc": "empty", "/dev": "empty", "/tmp": "empty"})
    for folder in by_depth(spec.read_only):
        argv += [*tree.parents(folder), "--ro-bind", folder, folder]
        tree.mounts[folder] = "host"
    for folder in by_depth(spec.hidden_dirs):
        if tree.covering(folder) == "host":
            argv += ["--tmpfs", folder]
            tree.mounts[folder] = "empty"
    for path in by_depth(spec.hidden_files):
        if tree.covering(path) == "host":
            argv += ["--ro-bind", "/dev/null", path]
            tree.mounts[path] = "empty"
    for folder in by_depth((home, *spec.writable)):
        argv += [*tree.parents(folder), "--bind", folder, folder]
        tree.mounts[folder] = "host"
    moved = [(s, t, "--ro-bind") for s, t in spec.read_only_at]
    moved += [(s, t, "--bind") for s, t in spec.writable_at]
    for source, target, how in sorted(moved, key=lambda m: (normal(m[1]).count("/"), m[1])):
        inside = normal(target)
        argv += [*tree.parents(inside), how, normal(source), inside]
        tree.mounts[inside] = "host"
    for source, target in spec.devices:
        argv += ["--dev-bind", normal(source), normal(target)]
    argv += ["--chdir", normal(spec.cwd or home)]
    if spec.uid is not None and spec.gid is not None:
        # bubblewrap's command is setpriv, whose own "--" precedes the user's command
        return [*argv, *drop_to(spec.uid, spec.gid, spec.command, spec.setpriv)]
    return [*argv, "--", *spec.command]


def drop_to(uid: int, gid: int, command: Iterable[str], setpriv: str = SETPRIV) -> list[str]:
    """``command`` run by ``setpriv`` as ``uid``/``gid``: no supplementary groups, no
    capabilities (inherited or in the bounding set), ``no_new_privs``; never root."""
    command = list(command)
    if not command:
        raise SandboxError("a sandbox needs a command")
    if uid == 0 or gid == 0:
        raise SandboxError("user code never runs as root: give an unprivileged uid")
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *command,
    ]


def device_binds(
    indexes: Iterable[int], present: Iterable[str], device_dir: str = "/dev"
) -> tuple[tuple[str, str], ...]:
    """Bind pairs for the booked GPUs ``indexes`` and the control devices, limited to
    the names ``present`` in ``device_dir``; inside they appear under ``/dev``."""
    names = set(present)
    wanted = [f"nvidia{i}" for i in sorted(set(indexes))]
    if wanted:  # a CPU-only sandbox gets no NVIDIA device at all
        wanted += [*CONTROL_DEVICES, CAPS_FOLDER]
    folder = normal(device_dir)
    return tuple((posixpath.join(folder, name), f"/dev/{name}") for name in wanted if name in names)


def unit_indexes(units: str) -> list[int]:
    """GPU indexes of ``WERKHUB_GPU_UNITS`` ("n1/0,n1/3/3g.40gb-1" -> [0, 3])."""
    found: set[int] = set()
    for unit in filter(None, (u.strip() for u in units.split(","))):
        parts = unit.split("/")
        if len(parts) < 2 or not parts[1].isdigit():
            raise SandboxError(f"not a GPU unit id: {unit!r}")
        found.add(int(parts[1]))
    return sorted(found)


def parse_size(value: str) -> int | None:
    """``"512M"`` -> bytes (binary units); empty -> None."""
    if not value:
        return None
    match = _SIZE.match(value.strip())
    if not match:
        raise SandboxError(f"not a size like '512M' or '4G': {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def account_files(
    user: str, uid: int, home: str, passwd: str, group: str, shell: str = "/bin/bash"
) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` as a sandbox running ``user`` as ``uid`` sees them:
    the host's (``passwd``, ``group``) with any entry of that name or id replaced by the
    person's own (primary group of the same number, home ``home``)."""
    for field_ in (user, home, shell):
        if not field_ or any(c in field_ for c in ":\n"):
            raise SandboxError(f"cannot write an account entry with {field_!r}")

    def others(text: str) -> list[str]:
        kept = []
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) > 2 and (parts[0] == user or parts[2] == str(uid)):
                continue
            kept.append(line)
        return kept

    passwd_lines = [*others(passwd), f"{user}:x:{uid}:{uid}:werkhub user {user}:{home}:{shell}"]
    group_lines = [*others(group), f"{user}:x:{uid}:"]
    return "\n".join(passwd_lines) + "\n", "\n".join(group_lines) + "\n"


def choose_uid(
    name: str,
    assigned: Mapping[str, int],
    base: int,
    count: int,
    taken: Callable[[int], bool] = lambda uid: False,
) -> int:
    """The uid of ``name``: the one it was given before, else the lowest uid of
    ``[base, base + count)`` that no other name has and ``taken`` (an OS account) does
    not claim."""
    if name in assigned:
        return assigned[name]
    used = set(assigned.values())
    for uid in range(base, base + count):
        if uid not in used and not taken(uid):
            return uid
    raise SandboxError(
        f"no free sandbox uid left in {base}..{base + count - 1}: raise spawner.sandbox.uid_count"
    )


def cgroup_v1_files(limits: Limits, period_us: int = 100_000) -> dict[str, dict[str, str]]:
    """controller -> {file: value} for a cgroup v1 hierarchy."""
    files: dict[str, dict[str, str]] = {}
    if limits.memory_bytes:
        files["memory"] = {
            "memory.limit_in_bytes": str(limits.memory_bytes),
            "memory.memsw.limit_in_bytes": str(limits.memory_bytes),  # no escape to swap
        }
    if limits.processes:
        files["pids"] = {"pids.max": str(limits.processes)}
    if limits.cpu_cores:
        files["cpu"] = {
            "cpu.cfs_period_us": str(period_us),
            "cpu.cfs_quota_us": str(max(1000, int(limits.cpu_cores * period_us))),
        }
    return files


def cgroup_v2_files(limits: Limits, period_us: int = 100_000) -> dict[str, str]:
    """{file: value} for a cgroup v2 leaf."""
    files: dict[str, str] = {}
    if limits.memory_bytes:
        files["memory.max"] = str(limits.memory_bytes)
        files["memory.swap.max"] = "0"
    if limits.processes:
        files["pids.max"] = str(limits.processes)
    if limits.cpu_cores:
        files["cpu.max"] = f"{max(1000, int(limits.cpu_cores * period_us))} {period_us}"
    return files


def describe(limits: Limits, how: str) -> str:
    """One line saying which limits were applied and how (for logs and the server)."""
    parts = []
    if limits.memory_bytes:
        parts.append(f"memory {limits.memory_bytes // 1024**2} MiB")
    if limits.cpu_cores:
        parts.append(f"cpu {limits.cpu_cores:g} cores")
    if limits.cpu_seconds:
        parts.append(f"cpu time {limits.cpu_seconds} s")
    if limits.processes:
        parts.append(f"processes {limits.processes}")
    return f"{how}: {', '.join(parts)}" if parts else f"{how}: no limits configured"
