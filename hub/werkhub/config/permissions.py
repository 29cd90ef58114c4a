"""The state folder belongs to werkhub's own OS user: files 0600, folders 0700.

It holds the hub's and the service's databases, password hashes, the MLflow store and
the secrets. ``werkhub up`` calls :func:`secure_state` before anything else runs: it
sets the umask to 077 (the hub, its services and MLflow inherit it, so everything they
create later is private too) and repairs what an older werkhub, a copy or a backup
restore left readable. What it cannot repair (a file of another OS user that others
may read) stops the start with a message that says what to do.

Two folders stay traversable (0711: enter, not list): the state folder itself and
``homes/``, so that user code running under a uid of its own reaches its own home.
What lies inside ``homes/`` (each user's home) is the spawner's business and is left
as it is.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from werkhub.config.paths import StatePaths
from werkhub.errors import Misconfigured

UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
#: the state folder and homes/: others may pass through to a home, not list or read
TRAVERSE_MODE = 0o711


class StatePermissionError(Misconfigured, RuntimeError):
    """A state file others may read that werkhub cannot make private."""


def wanted_mode(mode: int, traverse: bool = False) -> int:
    """The permission bits an entry of the state folder should have (pure)."""
    if stat.S_ISDIR(mode):
        return TRAVERSE_MODE if traverse else DIR_MODE
    return FILE_MODE | (mode & stat.S_IXUSR)  # an owner-executable file stays one


def entries(paths: StatePaths) -> Iterator[tuple[Path, os.stat_result, bool]]:
    """(path, lstat, traversable) for the state folder, skipping what lies in homes/
    and never following symbolic links; only folders and regular files."""
    root = paths.root
    yield root, root.lstat(), True
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            listing = list(os.scandir(folder))
        except OSError:  # e.g. a folder of another uid we may not list: nothing to fix
            continue
        for entry in listing:
            path = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                homes = path == paths.homes
                yield path, info, homes
                if not homes:
                    stack.append(path)
            elif stat.S_ISREG(info.st_mode):
                yield path, info, False


def secure_state(paths: StatePaths, error: type[Exception] = StatePermissionError) -> list[Path]:
    """Set the umask to 077 and make the state folder private; return what was repaired.

    Raises ``error`` (the launcher passes its own, which ``werkhub up`` prints) for a
    file or folder that others may read and whose mode werkhub may not change.
    """
    os.umask(UMASK)
    repaired: list[Path] = []
    for path, info, traverse in entries(paths):
        want = wanted_mode(info.st_mode, traverse)
        if stat.S_IMODE(info.st_mode) == want:
            continue
        try:
            os.chmod(path, want, follow_symlinks=False)
        except PermissionError:
            if stat.S_IMODE(info.st_mode) & 0o077 & ~(0o011 if traverse else 0):
                raise error(
                    f"{path} in the state folder is readable by other OS users (mode "
                    f"{stat.S_IMODE(info.st_mode):o}) and belongs to uid {info.st_uid}, not "
                    f"to the user running werkhub (uid {os.geteuid()}), so werkhub cannot "
                    f"make it private. Run `chown -R {os.geteuid()} {paths.root}` (or "
                    f"`chmod go-rwx {path}`) and start again."
                ) from None
            continue  # another uid's private entry: fine as it is
        repaired.append(path)
    return repaired
