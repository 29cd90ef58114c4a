"""Prompt readiness: return from a spawner's start() as soon as the server answers.

The hub checks a started server with exponential back-off and jitter (0.2 s, 0.4 s,
0.8 s, ... up to 5 s between checks), which adds up to a second or two to every spawn and
makes spawn times jump between runs. Polling here, every ``interval`` seconds, lets start()
return once the server answers, so the hub's first own check succeeds at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
from traitlets import Float
from traitlets.config import LoggingConfigurable

from werkhub import http


async def wait_answering(
    url: str,
    timeout: float,
    alive: Callable[[], Awaitable[bool]],
    interval: float = 0.05,
    alive_every: float = 1.0,
) -> bool:
    """Poll ``url`` until it answers below 500 (True), or give up (False) when ``alive``
    says the server is gone (checked every ``alive_every`` seconds) or on timeout; the
    hub's own checks then report the failure as usual."""
    deadline = time.monotonic() + timeout
    next_alive = time.monotonic()
    async with http.async_client(timeout=2) as client:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_alive:
                if not await alive():
                    return False
                next_alive = time.monotonic() + alive_every
            try:
                if (await client.get(url)).status_code < 500:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(interval)
    return False


class PromptReadyMixin(LoggingConfigurable):
    """Mixed into a spawner: ``await self.wait_until_answering(ip, port)`` at the end of its
    start(); the spawner says whether its server still lives (``_alive``)."""

    ready_poll_interval = Float(
        0.05, help="Seconds between readiness checks while the server starts"
    ).tag(config=True)
    #: seconds between liveness checks (0: every poll, for a cheap local check)
    ready_alive_every: float = 1.0

    async def _alive(self) -> bool:
        raise NotImplementedError

    async def wait_until_answering(self, ip: str, port: int) -> bool:
        return await wait_answering(
            f"http://{ip}:{port}{self.server.base_url}api",  # type: ignore[attr-defined]
            self.start_timeout,  # type: ignore[attr-defined]
            self._alive,
            interval=self.ready_poll_interval,
            alive_every=self.ready_alive_every,
        )
