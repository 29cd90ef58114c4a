"""``/endpoints/<owner>/<name>/{invocations,ping,version,health}``: the one way in to a
model (a pure ASGI app, ahead of the service's own routes and middleware).

Every request is authenticated before anything reaches a model: the owner, an admin or a
member of a group the endpoint is shared with, with their hub API token; or a machine with
an endpoint token (``wep_...``) that opens this endpoint and nothing else. No token, a
wrong one: 401. Someone who may not call the endpoint, or asks for one that does not
exist: 404 for both. A scaled-to-zero endpoint is started and the request waits; the
answer (MLflow's scoring server's, 4xx messages included) is passed through unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any

import aiohttp

from werkhub.errors import WerkhubError
from werkhub.serving.live import Live
from werkhub.serving.spec import PASSED
from werkhub.serving.store import EndpointStore, digest, token_id
from werkhub.serving.supervisor import StartFailed, Supervisor

Scope = dict[str, Any]
#: how long a checked endpoint token is trusted before the database is asked again
#: (revoking through the API forgets it at once)
TOKEN_TTL = 10.0
GET_PATHS = ("ping", "version", "health")


class Refused(WerkhubError):
    """A request the gateway answers itself (401, 404, 413, ...), never a model."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def answer(send: Any, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def refuse(send: Any, status: int, message: str) -> None:
    await answer(send, status, json.dumps({"detail": message}).encode(), "application/json")


def bearer(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() in ("token", "bearer") and token.strip():
                return token.strip()
    return None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class Gateway:
    def __init__(
        self,
        prefix: str,
        supervisor: Supervisor,
        store: EndpointStore,
        auth: Any,
        max_bytes: int,
    ) -> None:
        self.prefix = prefix
        self.supervisor = supervisor
        self.store = store
        self.auth = auth
        self.max_bytes = max_bytes
        #: token digest -> (checked at, endpoint id, expires)
        self._tokens: dict[str, tuple[float, int, float | None]] = {}
        self._used: dict[int, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self.timeout = supervisor.cfg.request_timeout_seconds + 5

    def forget_token(self, tid: int) -> None:
        """A token was revoked: trust nothing cached for it."""
        self._tokens = {k: v for k, v in self._tokens.items() if k.split(":")[0] != str(tid)}

    def take_used(self) -> dict[int, float]:
        used, self._used = self._used, {}
        return used

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope["path"][len(self.prefix) :].split("/")
        if len(parts) != 3 or parts[2] not in PASSED or not parts[0] or not parts[1]:
            await refuse(
                send, 404, "Endpoints answer at /endpoints/<owner>/<name>/invocations (or ping)."
            )
            return
        owner, name, action = parts
        method = scope["method"]
        if (action == "invocations") != (method == "POST") or method not in ("GET", "POST"):
            allowed = "POST" if action == "invocations" else "GET"
            await refuse(send, 405, f"{action} takes {allowed} requests.")
            return
        try:
            live, caller = await self.authorize(scope, owner, name)
            body = await self.read_body(receive) if method == "POST" else b""
        except Refused as exc:
            await refuse(send, exc.status, exc.message)
            return
        await self.forward(scope, send, live, caller, action, body)

    async def authorize(self, scope: Scope, owner: str, name: str) -> tuple[Live, str]:
        token = bearer(scope)
        if token is None:
            raise Refused(
                401, "Not logged in: send 'Authorization: Bearer <hub token or endpoint token>'."
            )
        live = self.supervisor.find(owner, name)
        missing = Refused(404, f"No endpoint '{name}' of {owner} (or you may not call it).")
        tid = token_id(token)
        if tid is not None:
            endpoint_id = await self.check_endpoint_token(tid, token)
            if live is None or endpoint_id != live.id:
                raise missing
            return live, f"token:{tid}"
        model = await self.auth.oauth.user_for_token(token, sync=False)
        if model is None:
            raise Refused(401, "The hub does not know this token (expired or revoked?).")
        if live is None:
            raise missing
        who = model.get("name", "")
        if model.get("kind") == "service":
            raise missing
        if who == live.owner:
            return live, who
        details = await self.auth.user_details(who) or {}
        groups = set(details.get("groups") or [])
        if details.get("admin") or groups & set(live.row.get("groups") or []):
            return live, who
        raise missing

    async def check_endpoint_token(self, tid: int, token: str) -> int:
        now = time.time()
        key = f"{tid}:{digest(token)}"
        cached = self._tokens.get(key)
        if cached is not None and now - cached[0] < TOKEN_TTL:
            _, endpoint_id, expires = cached
        else:
            row = await asyncio.to_thread(self.store.token_row, tid)
            if row is None or row["revoked"] is not None:
                raise Refused(401, "This endpoint token is not valid (revoked or unknown).")
            if not hmac.compare_digest(row["digest"], digest(token)):
                raise Refused(401, "This endpoint token is not valid (revoked or unknown).")
            endpoint_id, expires = row["endpoint_id"], row["expires"]
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (now, endpoint_id, expires)
        if expires is not None and now >= expires:
            raise Refused(401, "This endpoint token has expired; ask the owner for a new one.")
        self._used[tid] = now
        return endpoint_id

    async def read_body(self, receive: Any) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "The client went away before sending its request.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise Refused(
                    413, f"The request is larger than {self.max_bytes} bytes (serving limit)."
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def forward(
        self, scope: Scope, send: Any, live: Live, caller: str, action: str, body: bytes
    ) -> None:
        started = time.perf_counter()
        try:
            replica = await self.supervisor.ready_replica(live)
        except StartFailed as exc:
            await refuse(send, 503, str(exc))
            return
        key = id(replica)
        live.inflight[key] = live.inflight.get(key, 0) + 1
        try:
            status, content, kind = await self.pass_on(scope, replica.url, action, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            elapsed = (time.perf_counter() - started) * 1000
            self.supervisor.record(live, 502, elapsed, caller, body, b"")
            await refuse(send, 502, f"The model server did not answer: {type(exc).__name__}.")
            return
        finally:
            live.inflight[key] -= 1
        if action == "invocations":
            elapsed = (time.perf_counter() - started) * 1000
            self.supervisor.record(live, status, elapsed, caller, body, content)
        await answer(send, status, content, kind)

    async def pass_on(
        self, scope: Scope, url: str, action: str, body: bytes
    ) -> tuple[int, bytes, str]:
        """One request to the scoring server over a kept-alive connection (aiohttp: a
        third of httpx's CPU per forwarded request): status, body, content type."""
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        if action == "invocations":
            kind = header(scope, b"content-type") or "application/json"
            request = session.post(f"{url}/invocations", data=body, headers={"Content-Type": kind})
        else:
            request = session.get(f"{url}/{action}")
        async with request as reply:
            content = await reply.read()
            return reply.status, content, reply.headers.get("Content-Type", "application/json")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class EndpointRoutes:
    """ASGI middleware: paths below ``prefix`` go to the gateway the app's lifespan built
    (``app.state.endpoint_gateway``); everything else to the app."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            gateway = getattr(scope["app"].state, "endpoint_gateway", None)
            if gateway is None:
                await refuse(send, 503, "Model serving is off or still starting.")
                return
            await gateway(scope, receive, send)
            return
        await self.app(scope, receive, send)
