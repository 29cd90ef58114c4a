"""The test suite's helpers (tests/support/) for the benchmark scripts, which run as
``python bench/NAME.py`` with only bench/ on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.hub import Werkhub, write_config  # noqa: E402
from tests.support.net import free_port, free_ports, port_open  # noqa: E402
from tests.support.wait import wait_for  # noqa: E402

__all__ = ["ROOT", "Werkhub", "free_port", "free_ports", "port_open", "wait_for", "write_config"]
