"""Lines for the end-of-run summary that also reach it from pytest-xdist workers.

A worker's fixtures run where the controller cannot see them; ``note(config, line)`` keeps a
line in the worker's stash, tests/conftest.py hands it to the controller when the worker
ends and prints every line once under "werkhub test tiers"."""

from __future__ import annotations

import pytest

LINES = pytest.StashKey[list[str]]()


def note(config: pytest.Config, line: str) -> None:
    """Add ``line`` to the summary of this run."""
    config.stash.setdefault(LINES, []).append(line)
