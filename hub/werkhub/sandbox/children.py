"""Long-lived children of werkhub's own processes (scoring servers, Flower's SuperLinks and
SuperNodes): each dies with its parent (``PR_SET_PDEATHSIG``), runs in a session of its own,
reads nothing on stdin and writes stdout and stderr to one log file of werkhub's."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In the child (``preexec_fn``): get ``sig`` when the parent dies (a no-op off Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def with_parent_death(first: Callable[[], None] | None) -> Callable[[], None]:
    """A ``preexec_fn`` that runs ``first`` (the sandbox's own, if any), then ties the child's
    life to its parent's."""

    def run() -> None:
        if first is not None:
            first()
        die_with_parent()

    return run


async def spawn_logged(
    argv: Sequence[str],
    options: dict[str, Any],
    release: Callable[[], None] | None,
    log: Path,
) -> asyncio.subprocess.Process:
    """Start ``argv`` with ``options`` (cwd, env, preexec_fn of a prepared sandbox), appending
    its output to ``log``; when it cannot start, ``release`` (the sandbox's limits) runs."""
    handle = log.open("ab")
    try:
        options = {**options, "preexec_fn": with_parent_death(options.get("preexec_fn"))}
        return await asyncio.create_subprocess_exec(
            *argv,
            **options,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=handle,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        if release is not None:
            release()
        raise
    finally:
        handle.close()
