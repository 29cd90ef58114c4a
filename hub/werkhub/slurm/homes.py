"""Files in an OS user's home, written and read **as that user**.

werkhub runs as root (a Slurm administrator) and a home belongs to its user, who may put a
symbolic link anywhere in it at any moment. So werkhub never opens, creates or changes a
path in a home itself: ``mkdir``, ``tar`` and ``rm`` run as the user (``subprocess``
with ``user``/``group``), and what comes back from a home is a tar stream that werkhub
unpacks with tarfile's ``data`` filter (links out, devices and absolute paths are left
out).
Run as an ordinary user (tests of a one-user install), the same commands run as that user.
"""

from __future__ import annotations

import io
import os
import pwd
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from werkhub.slurm.errors import SlurmError

#: seconds one file command in a home may take
TIMEOUT_S = 120
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


def run_as(account: pwd.struct_passwd, argv: Sequence[str], data: bytes = b"") -> bytes:
    """Run ``argv`` as ``account`` (root drops to it), ``data`` on its standard input;
    its standard output, or a :class:`SlurmError` with its message."""
    drop = os.geteuid() == 0 and account.pw_uid != 0
    try:
        done = subprocess.run(
            list(argv),
            input=data,
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
            env={**_ENV, "HOME": account.pw_dir},
            cwd="/",
            **({"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
               if drop else {}),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"could not {argv[0]} in {account.pw_name}'s home: {exc}") from exc
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()
        raise SlurmError(f"could not {argv[0]} in {account.pw_name}'s home: {said}")
    return done.stdout


def make_dirs(account: pwd.struct_passwd, path: Path) -> None:
    """``mkdir -p -m 700 path`` as the user."""
    run_as(account, ["mkdir", "-p", "-m", "700", "--", str(path)])


def remove(account: pwd.struct_passwd, path: Path) -> None:
    """``rm -rf path`` as the user."""
    run_as(account, ["rm", "-rf", "--", str(path)])


def pack(files: Mapping[str, bytes], trees: Mapping[str, Path] | None = None) -> bytes:
    """A tar stream of ``files`` (name -> content, mode 0600) and of folders ``trees``
    (name -> a folder werkhub may read), links kept as links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o600
            tar.addfile(info, io.BytesIO(content))
        for name, folder in (trees or {}).items():
            tar.add(folder, arcname=name)
    return buffer.getvalue()


def put(account: pwd.struct_passwd, folder: Path, stream: bytes) -> None:
    """Unpack ``stream`` into ``folder`` as the user (the folder is made first)."""
    make_dirs(account, folder)
    run_as(account, ["tar", "-x", "--no-same-owner", "-C", str(folder), "-f", "-"], stream)


def take(account: pwd.struct_passwd, folder: Path, into: Path, leave: Sequence[str] = ()) -> None:
    """What ``folder`` holds (less the names in ``leave``), read as the user, unpacked
    into ``into`` by werkhub with tarfile's ``data`` filter."""
    argv = ["tar", "-c", "-C", str(folder), *(f"--exclude=./{n}" for n in leave), "-f", "-", "."]
    stream = run_as(account, argv)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r") as tar:
        tar.extractall(into, filter=_data_only)


def _data_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's ``data`` filter, leaving out (not failing on) what it refuses: a link
    out of the folder, a device, an absolute name."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None
