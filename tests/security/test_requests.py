"""Requests the service must refuse cleanly: bodies, CSRF, out-of-range values.

Against a real ``werkhub up`` (hub, proxy, service): bodies are sent over raw sockets
through the public proxy so chunked transfer and half-sent bodies are exactly what a
client puts on the wire.
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.hub import Werkhub

pytestmark = pytest.mark.hub
SVC = "/services/werkhub"
API = f"{SVC}/api"
BIG = 2**64
GPU = "L40S"  # in the simulated demo inventory of the session hub


def booking(hours_ahead: int = 30) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(hours=hours_ahead)).replace(microsecond=0)
    return {"gpu_type": GPU, "count": 1, "start": start.isoformat(), "duration_minutes": 15}


class Raw:
    """One HTTP/1.1 request written by hand to the hub's public port."""

    def __init__(self, hub: Werkhub, method: str, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", hub.ports["public"]), timeout=15)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{hub.ports['public']}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.sent = 0

    def chunk(self, data: bytes) -> bool:
        """Send one chunk; False once the server has stopped taking the body."""
        try:
            self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        except OSError:
            return False
        self.sent += len(data)
        return True

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def answer(self, timeout: float = 10) -> tuple[int, dict[str, Any]]:
        """Status and JSON body of the reply; (0, {}) if none came within ``timeout``."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                got = self.sock.recv(65536)
                if not got:
                    break
                data += got
            head, _, rest = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            while length and len(rest) < int(length.group(1)):
                got = self.sock.recv(65536)
                if not got:
                    break
                rest += got
        except TimeoutError:
            return 0, {}
        finally:
            self.sock.close()
        status = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        if not status:
            return 0, {}
        try:
            body = json.loads(rest) if rest.strip() else {}
        except ValueError:
            body = {"raw": rest.decode(errors="replace")}
        return int(status.group(1)), body


@pytest.fixture(scope="module")
def mallory(werkhub: Werkhub) -> str:
    return werkhub.create_user("rq-mallory")


def bookings_of(hub: Werkhub, token: str) -> list[dict[str, Any]]:
    with hub.client(token) as api:
        reply = api.get(f"{API}/bookings")
        assert reply.status_code == 200, reply.text
        return [b for b in reply.json() if b["state"] != "cancelled"]


def cancel_all(hub: Werkhub, token: str) -> None:
    with hub.client(token) as api:
        for found in bookings_of(hub, token):
            api.delete(f"{API}/bookings/{found['id']}")


# ---- bodies without credentials: refused before the body is read ------------------------


def test_chunked_body_without_auth_is_refused_before_it_is_sent(werkhub: Werkhub) -> None:
    raw = Raw(
        werkhub,
        "POST",
        f"{API}/bookings",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    assert raw.chunk(b"{" + b" " * 1024)  # the rest of the body is never sent
    began = time.monotonic()
    status, body = raw.answer(timeout=10)
    assert status == 401, (status, body)
    assert "Not logged in" in body["detail"]
    assert time.monotonic() - began < 5


def test_huge_declared_body_without_auth_is_refused_unread(werkhub: Werkhub) -> None:
    raw = Raw(
        werkhub,
        "POST",
        f"{API}/jobs",
        {
            "Content-Type": "application/json",
            "Content-Length": str(10 * 1024 * 1024),
            "Authorization": "token not-a-real-token",
        },
    )
    assert raw.send(b"{" + b" " * 4096)
    began = time.monotonic()
    status, body = raw.answer(timeout=10)
    assert status == 401, (status, body)
    assert "does not know this token" in body["detail"]
    assert time.monotonic() - began < 5


def test_streamed_10_mb_without_auth_is_cut_off_promptly(werkhub: Werkhub) -> None:
    raw = Raw(werkhub, "PATCH", f"{API}/jobs/1", {"Transfer-Encoding": "chunked"})
    began = time.monotonic()
    piece = b" " * 65536
    for _ in range(160):  # 10 MiB, if the server kept reading
        if not raw.chunk(piece):
            break
    status, _ = raw.answer(timeout=10)
    assert status == 401
    assert time.monotonic() - began < 10


# ---- bodies with credentials: 413 past the route's limit, nothing stored -----------------


def test_oversized_chunked_booking_answers_413_and_books_nothing(
    werkhub: Werkhub, mallory: str
) -> None:
    cancel_all(werkhub, mallory)
    body = json.dumps(booking()).encode()
    padded = body[:-1] + b" " * (200 * 1024) + b"}"  # valid JSON, 200 KiB
    raw = Raw(
        werkhub,
        "POST",
        f"{API}/bookings",
        {
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "Authorization": f"token {mallory}",
        },
    )
    for start in range(0, len(padded), 16384):
        if not raw.chunk(padded[start : start + 16384]):
            break
    else:
        raw.send(b"0\r\n\r\n")
    status, answer = raw.answer()
    assert status == 413, (status, answer)
    assert "at most 64 KiB" in answer["detail"]
    assert bookings_of(werkhub, mallory) == []


def test_declared_oversized_booking_answers_413(werkhub: Werkhub, mallory: str) -> None:
    padded = b'{"gpu_type": "L40S"' + b" " * (70 * 1024) + b"}"
    with werkhub.client(mallory) as api:
        reply = api.post(
            f"{API}/bookings", content=padded, headers={"Content-Type": "application/json"}
        )
    assert reply.status_code == 413 and "at most 64 KiB" in reply.json()["detail"]


def test_small_chunked_bodies_still_work(werkhub: Werkhub, mallory: str) -> None:
    cancel_all(werkhub, mallory)
    body = json.dumps(booking(hours_ahead=40)).encode()

    def pieces() -> Any:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    with werkhub.client(mallory) as api:
        reply = api.post(
            f"{API}/bookings", content=pieces(), headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 201, reply.text
        assert api.delete(f"{API}/bookings/{reply.json()['id']}").status_code == 200


def test_job_definitions_may_be_larger_but_not_unbounded(werkhub: Werkhub, mallory: str) -> None:
    spec = {"name": "rq-big", "notebook": "missing.ipynb", "parameters": {"x": "y" * 60_000}}
    with werkhub.client(mallory) as api:
        # 60 KB of parameters is allowed: the body (over 64 KiB when indented) is read
        reply = api.post(
            f"{API}/jobs",
            content=json.dumps(spec, indent=40).ljust(100 * 1024).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 422 and reply.json()["field"] == "notebook", reply.text
        reply = api.post(
            f"{API}/jobs",
            content=iter([json.dumps(spec).encode()[:-1], b" " * (300 * 1024), b"}"]),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 413 and "at most 256 KiB" in reply.json()["detail"]
        assert api.get(f"{API}/jobs").json() == []


# ---- CSRF: an Authorization header that did not validate changes nothing ------------------


def login(hub: Werkhub, name: str) -> httpx.Client:
    made = hub.cli("users", "add", name)
    assert made.returncode == 0, made.stderr
    password = re.search(r"Password \(shown once\): (\S+)", made.stdout)
    assert password
    browser = httpx.Client(base_url=hub.url, follow_redirects=True, timeout=30)
    page = browser.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf
    browser.post(
        "/hub/login",
        data={"username": name, "password": password.group(1), "_xsrf": xsrf.group(1)},
    )
    landing = browser.get(f"{SVC}/", headers={"Accept": "text/html"})  # OAuth round trip
    assert landing.status_code == 200, landing.text[:300]
    return browser


@pytest.fixture(scope="module")
def browser(werkhub: Werkhub) -> Any:
    client = login(werkhub, "rq-csrf")
    yield client
    client.close()


@pytest.mark.parametrize(
    "header", ["Basic Zm9vOmJhcg==", "token", "Bearer", "x", "token not-a-hub-token"]
)
def test_bogus_authorization_header_does_not_skip_csrf(browser: httpx.Client, header: str) -> None:
    reply = browser.post(f"{API}/bookings", json=booking(50), headers={"Authorization": header})
    assert reply.status_code in (401, 403), reply.text
    if reply.status_code == 403:
        assert "X-Werkhub-Csrf" in reply.json()["detail"]
    mine = browser.get(f"{API}/bookings").json()
    assert [b for b in mine if b["state"] != "cancelled"] == []


def test_validated_header_token_needs_no_csrf_token(werkhub: Werkhub, mallory: str) -> None:
    with werkhub.client(mallory) as api:
        reply = api.post(f"{API}/bookings", json=booking(60))
        assert reply.status_code == 201, reply.text
        assert api.delete(f"{API}/bookings/{reply.json()['id']}").status_code == 200


# ---- bounds: dates and ids out of range answer 4xx, never 500 -----------------------------


def test_booking_in_year_9999_is_a_clear_422(werkhub: Werkhub, mallory: str) -> None:
    with werkhub.client(mallory) as api:
        far = {"gpu_type": GPU, "count": 1, "start": "9999-12-31T00:00:00+00:00"}
        reply = api.post(f"{API}/bookings", json={**far, "duration_minutes": 60})
        assert reply.status_code == 422, reply.text
        assert "start" in reply.json()["detail"] and "2200" in reply.json()["detail"]
        reply = api.post(f"{API}/bookings", json={**far, "end": "9999-12-31T23:59:00+00:00"})
        assert reply.status_code == 422, reply.text
        reply = api.get(
            f"{API}/availability",
            params={"gpu_type": GPU, "start": "0001-01-01T00:00:00Z", "end": "9999-12-31T00:00Z"},
        )
        assert reply.status_code == 422 and "2000" in reply.json()["detail"], reply.text
    assert bookings_of(werkhub, mallory) == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"{API}/bookings/{BIG}", None),
        ("PATCH", f"{API}/bookings/{BIG}", {"end": "2100-01-01T00:00:00Z"}),
        ("DELETE", f"{API}/bookings/{BIG}", None),
        ("POST", f"{API}/bookings/{BIG}/release", None),
        ("DELETE", f"{API}/waitlist/{BIG}", None),
        ("POST", f"{API}/notifications/read", {"ids": [BIG]}),
        ("GET", f"{API}/bookings?offset={BIG}", None),
        ("GET", f"{API}/jobs/{BIG}", None),
        ("PATCH", f"{API}/jobs/{BIG}", {"name": "x"}),
        ("DELETE", f"{API}/jobs/{BIG}", None),
        ("POST", f"{API}/jobs/{BIG}/run", None),
        ("POST", f"{API}/jobs/{BIG}/pause", None),
        ("GET", f"{API}/jobs/{BIG}/runs", None),
        ("GET", f"{API}/runs/{BIG}", None),
        ("GET", f"{API}/runs/{BIG}/log", None),
        ("GET", f"{API}/reports/{BIG}", None),
        ("POST", f"{API}/reports/{BIG}/share", {"group": "team"}),
        ("POST", f"{API}/me/server/restart", {"booking_id": BIG}),
        ("GET", f"{API}/experiments/{2**63}/shares", None),
    ],
)
def test_ids_beyond_64_bits_answer_4xx(
    werkhub: Werkhub, mallory: str, method: str, path: str, body: Any
) -> None:
    with werkhub.client(mallory) as api:
        reply = api.request(method, path, json=body)
    assert reply.status_code in (404, 422), (reply.status_code, reply.text)
    assert reply.json()["detail"]
