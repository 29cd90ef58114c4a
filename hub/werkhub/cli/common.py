"""What every ``werkhub`` sub-command shares: the error it reports, the configuration
file it reads and the ``--state``/``--config`` options. Imports no other cli module."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from werkhub.config.load import load_config
from werkhub.config.schema import WerkhubConfig
from werkhub.errors import WerkhubError

DEFAULT_STATE = ".werkhub"


class CliError(WerkhubError, RuntimeError):
    """A command cannot do what was asked; the message says why (exit status 1)."""


def config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg).resolve()
    env = os.environ.get("WERKHUB_CONFIG")
    if env:
        return Path(env).resolve()
    default = Path("werkhub.yaml")
    return default.resolve() if default.is_file() else None


def load(args: argparse.Namespace) -> tuple[WerkhubConfig, Path | None]:
    path = config_path(args.config)
    return load_config(path), path


def add_common(p: argparse.ArgumentParser) -> None:
    """``--state`` and ``--config``, for commands that work on an installation."""
    p.add_argument(
        "--state",
        default=os.environ.get("WERKHUB_STATE", DEFAULT_STATE),
        help="state folder (default ./.werkhub)",
    )
    p.add_argument("--config", help="werkhub.yaml (default ./werkhub.yaml if present)")
