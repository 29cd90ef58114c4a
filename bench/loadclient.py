"""Closed-loop HTTP load for the benchmarks: a lean HTTP/1.1 client and the statistics.

The clients share the machine's cores with what they measure (2 on the project's test
machine). httpx spent 1.7-4.4 ms of CPU per request in the booking benchmark, more than
the service it measured, so the load it could generate, and the latencies it saw at 16
clients, said more about httpx than about werkhub. ``Connection`` speaks just what the
benchmarks need: one keep-alive connection, requests with a JSON body or a query string,
answers with ``Content-Length`` or chunked bodies; about 0.1 ms per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit


class TransportError(Exception):
    """The connection failed or the answer was not HTTP/1.1 this client understands."""


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class Connection:
    """One keep-alive HTTP/1.1 connection to ``base_url`` (``http://host:port/prefix``);
    opened on first use, opened again after the server closed it."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}"
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(
        self, path: str, *, headers: Mapping[str, str], params: Mapping[str, Any] | None = None
    ) -> Reply:
        target = f"{path}?{urlencode(params)}" if params else path
        return await self.request("GET", target, headers, b"")

    async def post(self, path: str, *, headers: Mapping[str, str], json: Any) -> Reply:
        body = _dumps(json).encode()
        return await self.request(
            "POST", path, {**headers, "Content-Type": "application/json"}, body
        )

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(method, target, headers, body)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
        ) as exc:
            await self.aclose()
            raise TransportError(f"{method} {target}: {exc!r}") from exc

    async def _exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise TransportError(f"not an HTTP status line: {status_line!r}") from exc
        fields = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            content = await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            content = await _chunked(reader)
        elif status in (204, 304) or 100 <= status < 200:
            content = b""
        else:  # the body runs to the end of the connection
            content = await reader.read()
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            await self.aclose()
        return Reply(status, content)

    async def aclose(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to these clients
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# ----------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Stats:
    """Latencies (ms) of answered requests by status, and the wall time of the run."""

    latencies: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: int = 0
    wall: float = 0.0

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + self.errors

    def ok(self) -> list[float]:
        return [x for code, v in self.latencies.items() if 200 <= code < 300 for x in v]

    def rate(self) -> float:
        return self.total / self.wall if self.wall else math.nan

    def other(self) -> str:
        codes = {c: len(v) for c, v in self.latencies.items() if not 200 <= c < 300 and c != 409}
        if self.errors:
            codes[0] = self.errors
        return ",".join(f"{c}x{n}" if c else f"transport-x{n}" for c, n in sorted(codes.items()))

    def line(self) -> str:
        ok = self.ok()
        s = (
            f"n={self.total:5d} ok={len(ok):5d} 409={len(self.latencies.get(409, [])):3d}  "
            f"{self.rate():7.1f} req/s  p50 {percentile(ok, 0.5):7.1f} ms  "
            f"p99 {percentile(ok, 0.99):7.1f} ms"
        )
        if other := self.other():
            s += f"  other: {other}"
        return s


def pooled(runs: list[Stats]) -> Stats:
    """The latencies of several runs together (wall times added)."""
    out = Stats()
    for run in runs:
        for code, values in run.latencies.items():
            out.latencies[code].extend(values)
        out.errors += run.errors
        out.wall += run.wall
    return out


# ----------------------------------------------------------------------- closed loops

Request = Callable[[Connection, str, int], Awaitable[Reply]]


async def load(
    api: str,
    client_tokens: list[list[str]],
    request: Request,
    *,
    seconds: float | None = None,
    per_client: int | None = None,
    warmup: int = 2,
) -> Stats:
    """Run one client per entry of ``client_tokens``, each with its own connection,
    rotating over its tokens; either for ``seconds`` or ``per_client`` requests each."""
    stats = Stats()
    counter = itertools.count()
    clients = [Connection(api) for _ in client_tokens]

    async def one(client: Connection, token: str, record: bool) -> None:
        t0 = time.perf_counter()
        try:
            reply = await request(client, token, next(counter))
        except TransportError:
            if record:
                stats.errors += 1
            return
        if record:
            stats.latencies[reply.status_code].append((time.perf_counter() - t0) * 1000)

    async def warm(client: Connection, tokens: list[str]) -> None:
        # every token once: the service checks a token with the hub once a minute (its
        # cache), a cost of the first request of a minute, not of the ledger
        for k in range(max(warmup, len(tokens))):
            await one(client, tokens[k % len(tokens)], record=False)

    async def timed(client: Connection, tokens: list[str], deadline: float) -> None:
        for k in itertools.count():
            if (seconds is not None and time.perf_counter() >= deadline) or (
                per_client is not None and k >= per_client
            ):
                return
            await one(client, tokens[k % len(tokens)], record=True)

    try:
        await asyncio.gather(*(warm(c, t) for c, t in zip(clients, client_tokens, strict=True)))
        start = time.perf_counter()
        deadline = start + (seconds or 0)
        await asyncio.gather(
            *(timed(c, t, deadline) for c, t in zip(clients, client_tokens, strict=True))
        )
        stats.wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return stats


def spread(tokens: list[str], clients: int) -> list[list[str]]:
    """Client j gets users j, j+clients, ...: disjoint users per client."""
    return [tokens[j::clients] for j in range(clients)]
