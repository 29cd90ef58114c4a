"""Flower's executables and the ``flwr`` CLI, driven as subprocesses (werkhub never
imports flwr: it lives in its own virtual environment, ``federation.flower_bin``).

werkhub's own ``flwr`` calls use the federation's ``flwr-home/`` as ``FLWR_HOME``, whose
``config.toml`` names the federation's SuperLink (TLS, verified against its CA)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from werkhub.errors import Misconfigured, Upstream
from werkhub.federation.commands import CONNECTION, QUIET_ENV, connection_toml, parse_json

#: the programs werkhub needs in ``flower_bin``
PROGRAMS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr", "python")
CLI_TIMEOUT = 120.0


class FlowerError(Upstream):
    """Flower refused or failed (the message says what Flower said)."""


def check_flower_bin(flower_bin: Path) -> Path:
    missing = [p for p in PROGRAMS if not os.access(flower_bin / p, os.X_OK)]
    if missing:
        raise Misconfigured(
            f"Flower is not installed in {flower_bin} (missing {', '.join(missing)}): "
            "run `make bootstrap` or set federation.flower_bin"
        )
    return flower_bin


def flower_paths(flower_bin: Path) -> list[str]:
    """What a sandbox must see read-only to run Flower: its virtual environment and the
    interpreter's installation behind it."""
    venv = flower_bin.resolve().parent
    python = Path(os.path.realpath(flower_bin / "python"))
    return sorted({str(venv), str(flower_bin.parent), str(python.parent.parent)})


def base_env(flower_bin: Path) -> dict[str, str]:
    return {"PATH": f"{flower_bin}:/usr/bin:/bin", **QUIET_ENV}


def write_connection(flwr_home: Path, address: str, ca_path: Path) -> None:
    """werkhub's own ``config.toml`` of a federation (rewritten when the address moves)."""
    flwr_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = connection_toml(address, str(ca_path))
    target = flwr_home / "config.toml"
    if not target.is_file() or target.read_text() != text:
        partial = flwr_home / ".config.toml.new"
        partial.write_text(text)
        partial.replace(target)


async def flwr(
    flower_bin: Path, flwr_home: Path, *args: str, what: str, timeout: float = CLI_TIMEOUT
) -> dict[str, Any]:
    """``flwr ARGS --format json`` against the federation's SuperLink; its JSON answer,
    or :class:`FlowerError` with Flower's own message."""
    env = {**base_env(flower_bin), "FLWR_HOME": str(flwr_home), "HOME": str(flwr_home)}
    proc = await asyncio.create_subprocess_exec(
        str(flower_bin / "flwr"),
        *args,
        "--format",
        "json",
        env=env,
        cwd=str(flwr_home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FlowerError(f"{what}: Flower's CLI did not answer in {timeout:g} s") from None
    text = out.decode(errors="replace")
    try:
        data = parse_json(text, what)
    except Upstream as error:
        detail = err.decode(errors="replace").strip()[-300:]
        raise FlowerError(f"{error}{f' ({detail})' if detail else ''}") from None
    return data


__all__ = ["CONNECTION", "FlowerError", "flwr"]
