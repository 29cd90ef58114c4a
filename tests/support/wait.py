"""Poll for a condition instead of sleeping a fixed time: return as soon as it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    timeout: float = 30,
    interval: float = 0.1,
    what: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something truthy, and return
    that; exceptions of the types in ``ignore`` count as "not yet". After ``timeout`` seconds
    raise AssertionError naming ``what`` (or the check) and the last value seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            found = check()
        except ignore as exc:
            found, last = None, exc
        else:
            if found:
                return found
            last = found
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or check}: {last!r}"
            )
        time.sleep(interval)


def wait_http(
    url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    interval: float = 0.02,
    status: int = 200,
) -> float:
    """Poll ``url`` (loopback: no proxy from the environment) until it answers ``status``;
    return ``time.perf_counter()`` at that answer (benchmarks time start-ups with it).
    Raises TimeoutError(url) after ``timeout`` seconds."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if httpx.get(url, headers=headers, timeout=2, trust_env=False).status_code == status:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise TimeoutError(url)
