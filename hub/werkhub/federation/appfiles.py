"""The files a federation's Flower app writes for werkhub (``rounds.jsonl``,
``final.json``, ``error.json``, each party's ``local.jsonl``) and its ``pyproject.toml``,
read without trust: bounded sizes and line counts, no symbolic links, every line parsed
by :mod:`werkhub.federation.rules` before it counts."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from werkhub.federation import rules

#: each party's local log is read up to this many lines per look
MAX_LINES = 10_000


def app_settings(app_dir: Path) -> set[str]:
    """The run config keys a Flower app declares (``[tool.flwr.app.config]``)."""
    with (app_dir / "pyproject.toml").open("rb") as handle:
        data = tomllib.load(handle)
    config = data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return set(config) if isinstance(config, dict) else set()


def read_small(path: Path, limit: int = 1024 * 1024) -> str:
    with path.open("rb") as handle:
        return handle.read(limit).decode("utf-8", "replace")


def read_new(path: Path, skip: int, parse: Callable[[str], Any]) -> tuple[list[Any], str | None]:
    """Complete lines of ``path`` after the first ``skip``, parsed; and the problem of
    the first bad line (None: none). A line still being written (no newline) waits."""
    if not path.is_file() or os.path.islink(path):
        return [], None
    found: list[Any] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            if number < skip:
                continue
            if not raw.endswith(b"\n") or len(found) >= MAX_LINES:
                break
            try:
                found.append(parse(raw.decode("utf-8", "replace")))
            except rules.AppFileError as exc:
                return found, f"line {number + 1}: {exc}"
    return found, None
