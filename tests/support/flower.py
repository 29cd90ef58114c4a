"""Running the federated template's Flower app in Flower's own environment (``.venv-flower``)
from the hub's: in a session of its own, so that whatever it leaves behind (Ray's raylet, GCS
and workers share that session) is killed with it. Used by the SecAgg+ tests and
bench/federation.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
APP = ROOT / "templates" / "federated-quality-inspection"


def run_flower(
    args: list[str], cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``.venv-flower``'s Python with ``args`` (the app on its path, Ray's usage report off,
    ``env`` added), its output in ``stdout``; the whole session is killed when it ends."""
    process = subprocess.Popen(
        [str(FLOWER_PYTHON), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(APP), "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(args, process.returncode, out, "")
