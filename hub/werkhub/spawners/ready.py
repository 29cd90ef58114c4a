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

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


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
    client = AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    next_alive = time.monotonic()
    while time.monotonic() < deadline:
        if time.monotonic() >= next_alive:
            if not await alive():
                return False
            next_alive = time.monotonic() + alive_every
        try:
            reply = await client.fetch(url, raise_error=False, request_timeout=2)
            if reply.code < 500 and reply.code != 599:
                return True
        except (HTTPClientError, OSError):
            pass
        await asyncio.sleep(interval)
    return False
