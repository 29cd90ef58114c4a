"""Request bodies: authenticate first, then read at most the route's limit.

An ASGI middleware in front of the whole service. A request that may carry a body (any
method but GET/HEAD/OPTIONS, or any request with ``Content-Length`` or
``Transfer-Encoding``) is authenticated from its headers and cookies before a single byte
of the body is read; without valid credentials it is refused there (401/403) and the body
is never received. Then ``Content-Length`` is checked against the route's limit, and the
bytes that arrive are counted as the application reads them, so a chunked or streamed body
without a length is cut off with 413 as soon as it passes the limit, never read whole.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: answers a request it refuses before its body is read, or None to let it through
Authenticate = Callable[[Request], Awaitable[Response | None]]
BODYLESS = {"GET", "HEAD", "OPTIONS"}


def too_large(limit: int) -> str:
    size = f"{limit // 1024} KiB" if limit >= 1024 else f"{limit} bytes"
    return f"request body too large: this endpoint takes at most {size}"


@dataclass(frozen=True)
class Override:
    """A larger (or smaller) limit for one route: method and path template."""

    method: str
    path: str  # e.g. "/services/werkhub/api/jobs/{job_id}"
    limit: int

    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"\{[^}/]+\}", self.path)
        return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "/?$")


class BodyLimit:
    """ASGI middleware: authenticate before the body, then enforce the route's limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: int,
        authenticate: Authenticate,
        overrides: Iterable[Override] = (),
    ) -> None:
        self.app = app
        self.default = default
        self.authenticate = authenticate
        self.overrides = [(o.method.upper(), o.pattern(), o.limit) for o in overrides]

    def limit_for(self, method: str, path: str) -> int:
        for wanted, pattern, limit in self.overrides:
            if wanted == method and pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        method = scope["method"].upper()
        if method in BODYLESS and not chunked and length in (None, "0"):
            await self.app(scope, receive, send)
            return
        refused = await self.authenticate(Request(scope))
        if refused is not None:
            await refused(scope, receive, send)
            return
        limit = self.limit_for(method, scope["path"])
        if length is not None and not length.strip().isdigit():
            await JSONResponse({"detail": "Content-Length is not a number"}, 400)(
                scope, receive, send
            )
            return
        if length is not None and int(length) > limit:
            await JSONResponse({"detail": too_large(limit)}, 413)(scope, receive, send)
            return
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = answered = False

        async def counted() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # answer 413 now and tell the app the client is gone: it stops reading,
                    # and whatever it answers after this is dropped
                    if not started:
                        await JSONResponse({"detail": too_large(limit)}, 413)(scope, receive, send)
                    answered = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, tracked)
