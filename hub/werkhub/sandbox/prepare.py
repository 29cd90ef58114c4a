"""One sandboxed process of a user: the local spawner's server or a local job's runner.

``settings`` is the JSON-able dict :func:`werkhub.app.configurer.sandbox_settings` makes from
werkhub.yaml (the hub gets it as the spawner's ``sandbox`` trait, the service in
``WERKHUB_SANDBOX``); an empty dict means "no sandbox" and is refused here.

``settings["isolation"]`` says how: ``bubblewrap`` (the sandbox proper), or ``uid`` where
a root-run werkhub cannot sandbox (no bubblewrap, or ``spawner.sandbox: off``): user code
then still never runs as root but under the person's own uid, owning only their home, with
the same limits; the state folder's modes keep werkhub's files from it, but other users'
processes stay visible and GPU devices are not narrowed to the booking (the install is
single-team, and says so).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from werkhub.sandbox.host import (
    Enforcement,
    UidRegistry,
    bwrap_path,
    closed_folders,
    enforce,
    own_folder,
    passable_to,
    python_paths,
    system_layout,
)
from werkhub.sandbox.spec import (
    Limits,
    SandboxError,
    SandboxSpec,
    account_files,
    build_argv,
    device_binds,
    drop_to,
    parse_size,
)

#: variable of the werkhub service holding the sandbox settings (JSON)
SETTINGS_VAR = "WERKHUB_SANDBOX_SETTINGS"
#: variable inside each sandbox saying what isolates it and which limits apply
NOTE_VAR = "WERKHUB_SANDBOX"
#: ``settings["isolation"]``: the person's own uid only (a root-run werkhub without a sandbox)
UID_ONLY = "uid"
BUBBLEWRAP = "bubblewrap"


@dataclass
class Prepared:
    argv: list[str]
    env: dict[str, str]
    preexec: Callable[[], None]
    enforcement: Enforcement
    uid: int
    #: working folder to start the process in (bubblewrap changes into its own)
    cwd: str = "/"

    def release(self) -> None:
        self.enforcement.release()


def settings_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    raw = environ.get(SETTINGS_VAR, "")
    return json.loads(raw) if raw.startswith("{") else {}


#: where root-run werkhubs record which uid each person's sandbox runs as
DEFAULT_UID_REGISTRY = "/var/lib/werkhub/sandbox-uids.json"
UID_REGISTRY_VAR = "WERKHUB_UID_REGISTRY"


def uid_of(settings: Mapping[str, Any], user: str) -> int:
    """The uid ``user``'s code runs as: its own when werkhub is root, else werkhub's."""
    if os.geteuid() != 0:
        return os.geteuid()
    # one registry for the whole machine: two werkhubs (state folders) on one machine must
    # never hand the same uid to two people, so the key is the state folder and the name
    registry = Path(os.environ.get(UID_REGISTRY_VAR) or DEFAULT_UID_REGISTRY)
    key = f"{os.path.realpath(settings['state_root'])}:{user}"
    return UidRegistry(registry, int(settings["uid_base"]), int(settings["uid_count"])).uid_for(key)


def write_accounts(settings: Mapping[str, Any], user: str, uid: int, home: Path) -> tuple:
    """The account files of ``user``'s sandbox, written (root only) under the state folder's
    ``sandbox/<uid>/``: ((host file, path inside), ...) for :class:`SandboxSpec`."""
    folder = Path(settings["state_root"]) / "sandbox" / str(uid)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    host = {name: Path("/etc", name).read_text(errors="replace") for name in ("passwd", "group")}
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    texts = account_files(user, uid, str(home), host["passwd"], host["group"], shell)
    binds = []
    for name, text in zip(("passwd", "group"), texts, strict=True):
        target = folder / name
        partial = folder / f".{name}.new"
        partial.write_text(text)
        # private like every state file, but the user's own: read through the bind mount
        partial.chmod(0o600)
        os.chown(partial, uid, uid)
        partial.replace(target)
        binds.append((str(target), f"/etc/{name}"))
    return tuple(binds)


def prepare(
    settings: Mapping[str, Any],
    user: str,
    *,
    command: Iterable[str],
    home: Path,
    env: Mapping[str, str],
    label: str,
    cwd: Path | None = None,
    writable: Iterable[Path] = (),
    gpu_indexes: Iterable[int] = (),
    cpu_seconds: int | None = None,
    read_only_at: Iterable[tuple[Path, str]] = (),
    writable_at: Iterable[tuple[Path, str]] = (),
    unshare_net: bool = False,
) -> Prepared:
    """Everything needed to start ``command`` for ``user`` in a sandbox (or under the
    user's own uid, see the module's text): call ``release()`` once the process has ended.

    ``read_only_at`` / ``writable_at`` bind host paths at other paths inside, and
    ``unshare_net`` gives the process a network of its own (loopback only): both need
    bubblewrap."""
    if not settings:
        raise SandboxError("the sandbox is off")
    uid_only = settings.get("isolation") == UID_ONLY
    moved = (
        tuple((str(h), i) for h, i in read_only_at),
        tuple((str(h), i) for h, i in writable_at),
    )
    if uid_only and (unshare_net or moved[0] or moved[1]):
        raise SandboxError(
            "a private network and paths bound elsewhere need bubblewrap (spawner.sandbox)"
        )
    as_root = os.geteuid() == 0
    if uid_only and not as_root:
        raise SandboxError("running user code under its own uid needs werkhub to run as root")
    bwrap = None if uid_only else bwrap_path()
    if not uid_only and bwrap is None:
        raise SandboxError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    command, writable = list(command), [Path(w) for w in writable]
    uid = uid_of(settings, user)
    for folder in (home, *writable):
        if as_root:
            own_folder(folder, uid, uid)
        else:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if uid_only:  # werkhub's private folders on the way: passable, never listable
            passable_to(folder.parent, Path(settings["state_root"]))
    if bwrap is None:
        argv, start_in = uid_argv(uid, command, home, writable), str(cwd or home)
        how = (
            f"uid {uid} without bubblewrap (other users' processes are visible, GPU devices "
            "are not narrowed to the booking)"
        )
    else:
        spec = bwrap_spec(settings, user, uid, command, home, cwd, writable, gpu_indexes)
        spec = replace(spec, read_only_at=moved[0], writable_at=moved[1], unshare_net=unshare_net)
        argv, start_in, how = build_argv(replace(spec, bwrap=bwrap)), "/", f"bubblewrap, uid {uid}"
    enforcement = enforce(limits_of(settings, cpu_seconds), f"{label}-{uid}")
    full_env = {"HOME": str(home), **env, "USER": user, "LOGNAME": user}
    full_env[NOTE_VAR] = f"{how}; {enforcement.note}"
    return Prepared(argv, full_env, enforcement.preexec(), enforcement, uid, start_in)


def bwrap_spec(
    settings: Mapping[str, Any],
    user: str,
    uid: int,
    command: list[str],
    home: Path,
    cwd: Path | None,
    writable: list[Path],
    gpu_indexes: Iterable[int],
) -> SandboxSpec:
    """The bubblewrap sandbox of one process: the system and the interpreter read-only,
    the state folder hidden, the home and ``writable`` bound, the booked devices."""
    as_root = os.geteuid() == 0
    device_dir = str(settings.get("device_dir") or "/dev")
    try:
        present = os.listdir(device_dir)
    except OSError:
        present = []
    devices = device_binds(gpu_indexes, present, device_dir)
    layout = system_layout()
    if devices:  # GPU libraries read the PCI topology
        layout["system"] = (*layout["system"], "/sys")
    hidden = [os.path.abspath(h) for h in (settings["state_root"], *settings.get("hidden", []))]
    return SandboxSpec(
        command=tuple(command),
        home=str(home),
        cwd=str(cwd or home),
        writable=tuple(str(w) for w in writable),
        read_only=tuple(python_paths() + list(settings.get("read_only", []))),
        hidden_dirs=tuple(h for h in hidden if not os.path.isfile(h)),
        hidden_files=tuple(h for h in hidden if os.path.isfile(h)),
        devices=devices,
        files=write_accounts(settings, user, uid, home) if as_root else (),
        uid=uid if as_root else None,
        gid=uid if as_root else None,
        **layout,
    )


def uid_argv(uid: int, command: list[str], home: Path, writable: list[Path]) -> list[str]:
    """``command`` under ``uid`` without bubblewrap. The program, the home and the
    writable folders must be reachable by that uid: a folder in the way is named."""
    program = (shutil.which(command[0]) or command[0]) if command else ""
    closed = closed_folders([os.path.realpath(program), home, *writable], uid)
    if closed:
        raise SandboxError(
            f"user code runs under its own uid here, but it may not pass through {closed}: "
            "allow it (chmod o+x) or move werkhub's installation and state folder"
        )
    return drop_to(uid, uid, command)


def limits_of(settings: Mapping[str, Any], cpu_seconds: int | None) -> Limits:
    return Limits(
        memory_bytes=parse_size(str(settings.get("mem_limit") or "")),
        cpu_cores=settings.get("cpu_limit"),
        processes=settings.get("max_processes"),
        cpu_seconds=cpu_seconds,
    )
