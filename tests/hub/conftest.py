from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import Werkhub, make_werkhub


@pytest.fixture(scope="session")
def werkhub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    hub = make_werkhub(tmp_path_factory.mktemp("werkhub"))
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    # answer spawn requests at once (202) so tests can follow the progress stream
    hatch = hub.config.parent / "jupyterhub_config.d"
    hatch.mkdir()
    (hatch / "10-tests.py").write_text(
        'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}\n'
    )
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture
def fresh_werkhub(tmp_path: Path) -> Iterator[Werkhub]:
    """A werkhub of the test's own, for lifecycle tests that stop and restart it."""
    hub = make_werkhub(tmp_path)
    yield hub
    if hub.proc is not None and hub.proc.poll() is None:
        hub.stop()
