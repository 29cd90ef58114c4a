"""The hub service ``mlflow``: hub login in front of a private, permission-checking MLflow.

The hub starts this process as service ``mlflow`` (public URL ``/services/mlflow/``).
It starts the real MLflow server (``--app-name basic-auth``: MLflow's own users,
experiment permissions and roles) on a private loopback port, then forwards every
request (UI, static files, REST API, artifacts; streamed both ways, no size limit)
after the hub has said who the caller is:

* browsers: the hub's OAuth cookie (no second password; without it, the hub login),
* clients: ``Authorization: Bearer|token <hub token>`` (``MLFLOW_TRACKING_TOKEN``).

The request reaches MLflow with Basic auth of the caller's own MLflow account, created
on first sight (password derived from the gateway key); hub admins are MLflow admins,
hub groups MLflow roles. MLflow decides what each user may read or write.

Fail-closed: only routes on the allow-list of :mod:`werkhub.tracking.routes` are passed
on (each covered by MLflow's permission checks or by the gateway's own); experiment
names that begin with ``<user>/`` or ``<group>/``, and registered model names that
begin with ``<user>~`` or ``<group>~``, may be created or renamed to only by that user
or the group's members (and hub admins). A registered model's group shares follow it
when it is renamed and go when it is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from werkhub import http
from werkhub.auth.hub import STATE_COOKIE, HubAuthenticator, HubUser, NeedsLogin
from werkhub.config.env import EnvError, ServiceEnv, read_env
from werkhub.config.wiring import MLFLOW_NAME, SERVER_KEEP_ALIVE
from werkhub.sandbox.children import die_with_parent
from werkhub.tracking.accounts import MlflowAdmin, MlflowAdminError
from werkhub.tracking.identity import GATEWAY_ADMIN, GatewaySecrets
from werkhub.tracking.routes import (
    BadBody,
    experiment_action,
    may_use_model_name,
    may_use_name,
    model_action,
    model_named,
    model_namespace_refusal,
    namespace_refusal,
    refusal,
    request_fields,
    requested_experiment,
    requested_model_names,
    requested_names,
)

log = logging.getLogger("werkhub.tracking.gateway")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
#: request headers the gateway replaces or must not pass on
DROP_REQUEST = HOP_BY_HOP | {"host", "authorization", "origin"}
#: a 401 from MLflow must not open the browser's password dialog
DROP_RESPONSE = HOP_BY_HOP | {"www-authenticate"}
#: the most the gateway reads of a create, rename or restore body (they are tiny)
NAMING_BODY_LIMIT = 1024 * 1024
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
START_TIMEOUT = 180.0


def auth_ini(database_uri: str, cache_ttl: int = 30) -> str:
    """MLflow's basic-auth configuration: nobody may read what is not theirs or shared."""
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {GATEWAY_ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # each request carries a password; scrypt on every one would cost most of the CPU
        f"auth_cache_ttl_seconds = {cache_ttl}\n"
    )


#: MLflow's error codes for the gateway's own refusals (MLflow clients show code: message)
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    413: "INVALID_PARAMETER_VALUE",
}


def refused(status: int, message: str) -> JSONResponse:
    """A refusal both the hub's clients (``detail``) and MLflow's clients
    (``error_code``, ``message``) show as written."""
    code = ERROR_CODES.get(status, "PERMISSION_DENIED")
    return JSONResponse({"detail": message, "error_code": code, "message": message}, status)


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the gateway dies, even by SIGKILL, so no
    private MLflow server is left running without its gateway."""
    die_with_parent(signal.SIGTERM)


class MlflowProcess:
    """The private MLflow server: its own process group, stopped with the gateway."""

    def __init__(self, argv: list[str], internal_url: str, prefix: str) -> None:
        self.argv = argv
        self.health = f"{internal_url.rstrip('/')}{prefix}/health"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, state: Path, keys: GatewaySecrets, auth_db: str) -> None:
        ini = state / "mlflow" / "basic_auth.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        ini.write_text(auth_ini(auth_db))
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        env.update(
            {
                "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                "MLFLOW_AUTH_ADMIN_USERNAME": GATEWAY_ADMIN,
                "MLFLOW_AUTH_ADMIN_PASSWORD": keys.admin_password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": keys.flask_secret,
                # MLflow's own net behind the gateway's allow-list: a route without a
                # permission check is denied (the default since 3.x; never inherited off)
                "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true",
            }
        )
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=state,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with http.async_client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"MLflow exited with {self.proc.returncode} while starting")
                with suppress(httpx.HTTPError):
                    if (await client.get(self.health)).status_code == 200:
                        return
                await asyncio.sleep(0.25)
        raise RuntimeError(f"MLflow did not answer {self.health} within {timeout:.0f}s")

    def stop(self, grace: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Gateway:
    """Authenticates callers, keeps their MLflow accounts in step, forwards requests."""

    def __init__(self, auth: HubAuthenticator, admin: MlflowAdmin, internal_url: str) -> None:
        self.auth = auth
        self.admin = admin
        self.internal = internal_url.rstrip("/")
        self.upstream = http.async_client(
            timeout=httpx.Timeout(connect=10, read=600, write=600, pool=30),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._synced: dict[str, tuple[bool, tuple[str, ...]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self.upstream.aclose()

    async def sync(self, user: HubUser) -> None:
        """Create the user's MLflow account on first sight; follow admin flag and groups."""
        wanted = (user.admin, tuple(user.groups))
        if self._synced.get(user.name) == wanted:
            return
        lock = self._locks.setdefault(user.name, asyncio.Lock())
        async with lock:
            if self._synced.get(user.name) == wanted:
                return
            before = self._synced.get(user.name)
            if before is None:
                await self.admin.ensure_user(user.name, user.admin)
            elif before[0] != user.admin:
                await self.admin.set_admin(user.name, user.admin)
            await self.admin.sync_groups(user.name, user.groups)
            self._synced[user.name] = wanted

    def refuse(self, request: Request, user: HubUser, from_cookie: bool) -> Response | None:
        if user.kind != "user" or user.name == GATEWAY_ADMIN:
            return JSONResponse({"detail": "Only hub users have an MLflow identity."}, 403)
        denial = refusal(request.method, self.below_prefix(request))
        if denial is not None:
            return refused(*denial)
        origin = request.headers.get("origin")
        cross_site = origin and urlparse(origin).netloc != request.headers.get("host", "")
        if from_cookie and request.method in STATE_CHANGING and cross_site:
            return JSONResponse({"detail": "Cross-site request refused."}, 403)
        return None

    def below_prefix(self, request: Request) -> str:
        """The request's (percent-decoded) path below the gateway's prefix."""
        return request.url.path[len(self.auth.prefix.rstrip("/")) :] or "/"

    async def read_body(self, request: Request) -> bytes | Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > NAMING_BODY_LIMIT:
                return refused(413, "The request body is too large.")
        return bytes(body)

    async def check_names(self, request: Request, user: HubUser, action: str) -> Response | None:
        """The name-space rule for a create, rename or restore (body already read)."""
        try:
            data = request_fields(request.state.body)
            names = requested_names(action, data)
            experiment_id = requested_experiment(data) if action == "restore" else None
        except BadBody as exc:
            return refused(400, str(exc))
        found = None if experiment_id is None else await self.admin.experiment(experiment_id)
        if (
            found is not None
            and not may_use_name(found["name"], user.name, user.groups, user.admin)
            # tell only someone who may see the experiment what its name is
            and await self.admin.permission(user.name, found["experiment_id"]) != "NO_PERMISSIONS"
        ):
            names = [found["name"]]
        for name in names:
            if not may_use_name(name, user.name, user.groups, user.admin):
                return refused(403, namespace_refusal(name, user.name))
        return None

    def check_model_names(self, request: Request, user: HubUser, action: str) -> Response | None:
        """The name-space rule for a registered model's create or rename (body read)."""
        try:
            data = request_fields(request.state.body)
            names = requested_model_names(action, data)
            request.state.model = model_named(data)
        except BadBody as exc:
            return refused(400, str(exc))
        for name in names:
            if not may_use_model_name(name, user.name, user.groups, user.admin):
                return refused(403, model_namespace_refusal(name, user.name))
        request.state.model_names = names
        return None

    async def follow_model(self, request: Request, action: str) -> None:
        """After MLflow created, renamed or deleted a registered model: the hub groups'
        shares follow the name (MLflow moves only per-user grants with it)."""
        old, new = request.state.model, request.state.model_names
        try:
            if action == "rename" and old and new:
                await self.admin.move_shares(old, new[0])
            elif action == "delete" and old:
                await self.admin.drop_shares(old)
            elif action == "create" and new:
                await self.admin.drop_shares(new[0])  # left over from a failed delete
        except (MlflowAdminError, httpx.HTTPError) as exc:
            log.error("group shares of registered model %r not updated: %s", old or new, exc)

    @property
    def public_paths(self) -> tuple[str, ...]:
        base = self.auth.prefix.rstrip("/")
        return (f"{base}/health", f"{base}/version")

    def upstream_headers(self, request: Request, user: HubUser | None) -> list[tuple[str, str]]:
        ours = {self.auth.cookie_name, STATE_COOKIE}
        headers: list[tuple[str, str]] = []
        for key, value in request.headers.items():
            if key in DROP_REQUEST:
                continue
            if key == "cookie":
                # the hub's cookies (login, session, our OAuth token) stay with the hub
                parts = (c.strip() for c in value.split(";"))
                kept = [
                    c
                    for c in parts
                    if c
                    and c.split("=", 1)[0] not in ours
                    and not c.startswith(("jupyterhub-", "_xsrf="))
                ]
                if not kept:
                    continue
                value = "; ".join(kept)
            headers.append((key, value))
        if user is not None:
            password = self.admin.keys.user_password(user.name)
            headers.append(("authorization", basic(user.name, password)))
        return headers

    async def forward(self, request: Request, user: HubUser | None) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = self.internal + raw_path.decode("latin-1")
        if request.url.query:
            url += "?" + request.url.query
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        content = getattr(request.state, "body", None)
        if content is None and has_body:
            content = request.stream()
        headers = self.upstream_headers(request, user)
        if isinstance(content, bytes):  # read whole for a check: send it with its length
            headers = [(k, v) for k, v in headers if k not in ("content-length",)]
        # a body already read (or none) can be sent twice: after a 401 for an account that
        # went away behind this gateway's back (the user was deleted and the name created
        # again), the account is set up again and the request repeated once
        replayable = content is None or isinstance(content, bytes)
        try:
            reply = await self._send(request.method, url, headers, content)
            if reply.status_code == 401 and user is not None:
                self._synced.pop(user.name, None)
                if replayable:
                    await reply.aclose()
                    await self.sync(user)
                    reply = await self._send(request.method, url, headers, content)
        except httpx.HTTPError as exc:
            log.warning("MLflow unreachable: %s", exc)
            return JSONResponse({"detail": "MLflow is not reachable (starting or stopped?)."}, 502)
        except MlflowAdminError as exc:
            log.warning("MLflow account of %s not set up: %s", user and user.name, exc)
            return JSONResponse({"detail": "MLflow did not set up your account."}, 502)
        response = StreamingResponse(
            reply.aiter_raw(),
            status_code=reply.status_code,
            background=BackgroundTask(reply.aclose),
        )
        response.raw_headers = [
            (k, v) for k, v in reply.headers.raw if k.decode("latin-1").lower() not in DROP_RESPONSE
        ]
        return response

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], content: Any
    ) -> httpx.Response:
        built = self.upstream.build_request(method, url, headers=headers, content=content)
        return await self.upstream.send(built, stream=True)

    async def handle(self, request: Request) -> Response:
        if request.url.path.rstrip("/") == f"{self.auth.prefix.rstrip('/')}/oauth_callback":
            try:
                return await self.auth.finish_login(request)
            except HTTPException as exc:
                return JSONResponse({"detail": exc.detail}, exc.status_code)
        base = self.auth.prefix.rstrip("/")
        if request.url.path != base and not request.url.path.startswith(f"{base}/"):
            return JSONResponse({"detail": f"Not under {base}/."}, 404)
        if request.url.path in self.public_paths:
            return await self.forward(request, None)  # liveness probes, no identity
        from_cookie = self.auth.token_from_header(request) is None
        try:
            user = await self.auth.identify(request)
        except NeedsLogin as exc:
            return self.auth.login_redirect(exc.next_url)
        except HTTPException as exc:
            detail = str(exc.detail).replace("werkhub service", "MLflow service")
            return JSONResponse({"detail": detail}, exc.status_code)
        answer = self.refuse(request, user, from_cookie)
        if answer is not None:
            return answer
        registry = model_action(self.below_prefix(request))
        try:
            await self.sync(user)
            action = experiment_action(self.below_prefix(request))
            if action is not None:
                body = await self.read_body(request)
                if isinstance(body, Response):
                    return body
                request.state.body = body
                answer = await self.check_names(request, user, action)
                if answer is not None:
                    return answer
            if registry is not None:
                body = await self.read_body(request)
                if isinstance(body, Response):
                    return body
                request.state.body = body
                answer = self.check_model_names(request, user, registry)
                if answer is not None:
                    return answer
        except (MlflowAdminError, httpx.HTTPError) as exc:
            log.error("could not set up the MLflow account of %s: %s", user.name, exc)
            return JSONResponse({"detail": "MLflow is not ready; try again in a moment."}, 503)
        response = await self.forward(request, user)
        if registry is not None and response.status_code == 200:
            await self.follow_model(request, registry)
        return response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def internal_address_file(state: Path) -> Path:
    """Where the gateway tells the werkhub service the private MLflow address."""
    return state / "mlflow" / "internal.json"


async def watch(server: MlflowProcess, interval: float = 2.0) -> None:
    """If MLflow dies, end the gateway too: the hub restarts its managed services, and
    a fresh gateway starts a fresh MLflow (a half-alive gateway would only answer 502)."""
    assert server.proc is not None
    while server.proc.poll() is None:
        await asyncio.sleep(interval)
    log.error(
        "MLflow exited with %s; stopping the gateway so the hub restarts both",
        server.proc.returncode,
    )
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(env: ServiceEnv | None = None) -> Starlette:
    """The gateway; ``env`` (what the hub passed in the environment) is read once unless
    given."""
    env = env or read_env(MLFLOW_NAME)
    if not env.mlflow_server:
        raise EnvError("WERKHUB_MLFLOW_SERVER: the MLflow server command is not set")
    state = env.state.root.resolve()
    port = env.mlflow_internal_port or free_port()
    argv = [
        *env.mlflow_server,
        "--port",
        str(port),
        "--allowed-hosts",
        f"127.0.0.1:{port}",
    ]
    internal = f"http://127.0.0.1:{port}"
    auth_db = env.mlflow_auth_db
    prefix = env.prefix

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        keys = GatewaySecrets.load_or_create(state / "secrets")
        server = MlflowProcess(argv, internal, prefix)
        server.start(state, keys, auth_db)
        try:
            await server.wait_ready()
            address = internal_address_file(state)
            address.write_text(json.dumps({"url": internal, "prefix": prefix}))
            admin = MlflowAdmin(internal + prefix, keys)
            app.state.gateway = Gateway(HubAuthenticator(), admin, internal)
            watchdog = asyncio.create_task(watch(server))
            yield
            watchdog.cancel()
            await app.state.gateway.aclose()
            await app.state.gateway.auth.aclose()
            await admin.aclose()
        finally:
            server.stop()

    async def endpoint(request: Request) -> Response:
        return await request.app.state.gateway.handle(request)

    return Starlette(
        routes=[Route("/{path:path}", endpoint, methods=METHODS)],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    env = read_env(MLFLOW_NAME)
    url = urlparse(env.url)
    uvicorn.run(
        create_app(env),
        host=url.hostname or "127.0.0.1",
        port=url.port or 10102,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=SERVER_KEEP_ALIVE,
    )


if __name__ == "__main__":
    main()
