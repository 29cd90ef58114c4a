"""Where a job's notebook is: a path in its owner's home, and nowhere else.

The path is checked on the real file system, component by component with ``lstat``, so
no symlink on the way (file or folder) can lead out of the home, and ``..`` or absolute
paths are refused before anything is touched.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from werkhub.jobs.errors import SpecError

FIELD = "notebook"


def notebook_path(rel: str) -> PurePosixPath:
    """The rules for notebook ``rel`` that need no file system: a relative ``.ipynb`` path
    without ``..``, NUL or backslash; SpecError("notebook", ...) otherwise."""
    if not isinstance(rel, str) or not rel.strip():
        raise SpecError(FIELD, "empty; give the path of a .ipynb file in your home folder")
    if "\x00" in rel or "\\" in rel:
        raise SpecError(FIELD, f"'{rel}' contains characters not allowed in a path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("~"):
        raise SpecError(FIELD, f"'{rel}' is absolute; give a path relative to your home folder")
    if ".." in pure.parts:
        raise SpecError(FIELD, f"'{rel}' leaves your home folder ('..' is not allowed)")
    if pure.suffix != ".ipynb":
        raise SpecError(FIELD, f"'{rel}' is not a notebook; the path must end in .ipynb")
    return pure


def resolve_notebook(home: Path, rel: str) -> Path:
    """The absolute path of notebook ``rel`` in ``home``; SpecError("notebook", ...) for an
    absolute path, ``..``, a symlink anywhere below ``home``, a missing file, or a file
    that is not a ``.ipynb`` notebook."""
    pure = notebook_path(rel)
    base = Path(os.path.abspath(home))
    current = base
    for i, part in enumerate(pure.parts):
        if part == ".":
            continue
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            raise SpecError(FIELD, f"'{rel}' does not exist in your home folder") from None
        except OSError as exc:
            raise SpecError(FIELD, f"'{rel}' cannot be read ({exc.strerror})") from None
        shown = "/".join(pure.parts[: i + 1])
        if stat.S_ISLNK(info.st_mode):
            raise SpecError(
                FIELD, f"'{shown}' is a symbolic link; jobs only run notebooks stored in your home"
            )
        last = i == len(pure.parts) - 1
        if not last and not stat.S_ISDIR(info.st_mode):
            raise SpecError(FIELD, f"'{shown}' is not a folder")
        if last and not stat.S_ISREG(info.st_mode):
            raise SpecError(FIELD, f"'{rel}' is not a regular file")
    return current
