"""The HTTP client helper against a real loopback server: headers, no proxy from the
environment, error messages of JupyterHub, FastAPI and MLflow answers, the command line's
JSON client and its refusals."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support.net import free_port
from werkhub import __version__, http
from werkhub.errors import Unavailable, Upstream, WerkhubError

ANSWERS = {
    "/ok": (200, {"hello": "world"}),
    "/empty": (204, None),
    "/fastapi": (422, {"detail": "start: give a date in the years 2000-2200"}),
    "/hub": (403, {"status": 403, "message": "Action is not authorized with current scopes"}),
    "/mlflow": (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad experiment"}),
    "/text": (502, "upstream broke"),
}


class Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        Handler.seen.append({k.lower(): v for k, v in self.headers.items()})
        status, body = ANSWERS.get(self.path, (404, {"detail": "no such path"}))
        data = (
            b""
            if body is None
            else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        )
        self.send_response(status)
        if not isinstance(body, str):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_headers_token_and_agent(server: str) -> None:
    with http.client(server, token="abc") as c:
        assert c.get("/ok").json() == {"hello": "world"}
    sent = Handler.seen[-1]
    assert sent["authorization"] == "token abc"
    assert sent["user-agent"] == f"werkhub/{__version__}"
    with http.client(server, bearer="xyz") as c:
        c.get("/ok")
    assert Handler.seen[-1]["authorization"] == "Bearer xyz"


def test_proxy_variables_are_ignored(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy that does not exist: a client that honoured it could not reach the server
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with http.client(server) as c:
        assert c.get("/ok").status_code == 200


def test_plain_http_skips_tls_and_timeouts_are_bounded(server: str) -> None:
    options = http._options(server, None, None, 60, None, None)
    assert options["verify"] is False and options["trust_env"] is False
    assert options["timeout"].connect == http.CONNECT_TIMEOUT and options["timeout"].read == 60
    assert http._options("https://hub.example", None, None, 5, None, None)["verify"] is True


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/fastapi", "start: give a date in the years 2000-2200"),
        ("/hub", "Action is not authorized with current scopes"),
        ("/mlflow", "bad experiment"),
        ("/text", "upstream broke"),
    ],
)
def test_detail_reads_each_server_kind(server: str, path: str, message: str) -> None:
    with http.client(server) as c:
        assert http.detail(c.get(path)) == message


async def test_async_client_and_probe(server: str) -> None:
    async with http.async_client(server, token="t") as c:
        assert (await c.get("/ok")).json() == {"hello": "world"}
    assert await http.answers(f"{server}/ok") == 200
    assert await http.answers(f"http://127.0.0.1:{free_port()}/") is None
    assert http.answers_ok(f"{server}/ok") and not http.answers_ok(f"{server}/hub")


def test_json_api_answers_and_refusals(server: str) -> None:
    api = http.JsonApi(server, "tok")
    assert api.request("GET", "/ok") == {"hello": "world"}
    assert api.request("DELETE", "/empty") is None
    assert api.request("GET", "/missing", ok404=True) is None
    assert api.request("GET", "/ok", raw=True) == '{"hello": "world"}'
    with pytest.raises(Upstream, match=r"^GET /hub: 403 Action is not authorized"):
        api.request("GET", "/hub")
    with pytest.raises(Upstream, match="404 no such path"):
        api.request("GET", "/missing")
    api.close()


def test_json_api_unreachable_names_the_address() -> None:
    base = f"http://127.0.0.1:{free_port()}/hub/api"
    api = http.JsonApi(base, "tok")
    with pytest.raises(Unavailable, match=f"werkhub is not reachable at {base}"):
        api.request("GET", "/users")

    class Mine(WerkhubError):
        pass

    custom = http.JsonApi(base, "tok", error=Mine, unreachable=Mine)
    with pytest.raises(Mine):
        custom.request("GET", "/users")


def test_connection_retries_use_the_transport() -> None:
    c = http.client(retries=2)
    assert isinstance(c._transport, httpx.HTTPTransport)
    assert c._transport._pool._retries == 2
    c.close()
