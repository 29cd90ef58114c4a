"""spawners.ready.wait_answering against a real HTTP server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import net
from werkhub.spawners.ready import wait_answering


class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="free_port")
def a_free_port() -> int:
    return net.free_port()


@pytest.fixture
def server(free_port: int) -> Iterator[ThreadingHTTPServer]:
    """Starts answering 0.3 s after the test begins (a server that is still booting)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port), Answer)
    httpd.status = 200  # type: ignore[attr-defined]

    def later() -> None:
        time.sleep(0.3)
        httpd.serve_forever()

    threading.Thread(target=later, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


async def alive() -> bool:
    return True


async def test_returns_soon_after_the_server_answers(server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{server.server_port}/user/a/api"
    start = time.monotonic()
    assert await wait_answering(url, timeout=10, alive=alive, interval=0.05)
    assert 0.25 < time.monotonic() - start < 2


async def test_server_errors_are_not_ready(server: ThreadingHTTPServer) -> None:
    server.status = 503  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.server_port}/user/a/api"
    assert not await wait_answering(url, timeout=1, alive=alive, interval=0.05)


async def test_gives_up_when_the_server_is_gone(free_port: int) -> None:
    calls = 0

    async def gone_after_two() -> bool:
        nonlocal calls
        calls += 1
        return calls < 3

    start = time.monotonic()
    url = f"http://127.0.0.1:{free_port}/user/a/api"  # nothing listens
    ready = await wait_answering(url, timeout=30, alive=gone_after_two, alive_every=0.1)
    assert not ready and calls == 3 and time.monotonic() - start < 5
