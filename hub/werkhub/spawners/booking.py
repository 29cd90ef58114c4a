"""What every werkhub spawner does around a start: validate the spawn options, ask the
werkhub service (over HTTP) which GPUs the user's booking gives, report progress, and
tell the service when the server runs and stops. Backends only apply the devices."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any, ClassVar

import httpx
from tornado import web
from traitlets import Dict, Unicode, default
from traitlets.config import LoggingConfigurable

from werkhub import http
from werkhub.gpus.devices import GpuAssignment, GpuAssignmentError, assignment_from_devices
from werkhub.spawners.options import SpawnOptionError, SpawnOptions, options_form, parse_options


def _preload_async_io() -> None:
    """Import what httpx's first async request would import lazily (anyio's asyncio
    backend): done at hub start instead of inside the first spawn's booking check, where
    it cost 25 ms on an idle machine and over 200 ms on a busy one."""
    try:
        importlib.import_module("anyio._backends._asyncio")
        importlib.import_module("httpcore._backends.anyio")
    except ImportError:  # other anyio/httpcore layouts: the first request imports them
        pass


_preload_async_io()


class BookingClient:
    """The hub side's HTTP client for the werkhub service's spawn endpoints."""

    #: one connection pool per event loop and service: a new client per call costs a TLS
    #: context and a TCP handshake on every spawn
    _clients: ClassVar[dict[tuple[int, str, str], httpx.AsyncClient]] = {}

    def __init__(self, base_url: str, token: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        self.timeout = timeout

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        key = (id(loop), self.base_url, self.headers["Authorization"])
        client = self._clients.get(key)
        if client is None or client.is_closed:
            for old in [k for k in self._clients if k[0] != id(loop)]:
                self._clients.pop(old)  # clients of loops that are gone (tests)
            # plain HTTP to the service (loopback, or the hub pod) loads no CA bundle
            client = self._clients[key] = http.async_client(
                self.base_url, timeout=self.timeout, extra_headers=self.headers
            )
        return client

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = await self._client().request(method, f"{self.base_url}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise web.HTTPError(503, f"the werkhub service cannot be reached ({exc})") from None
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text
            status = reply.status_code if reply.status_code in (400, 403, 404, 409) else 400
            raise web.HTTPError(status, str(detail), reason=str(detail)[:200])
        return reply.json()


class BookingSpawnerMixin(LoggingConfigurable):
    """Mixed into each backend's spawner class (before the backend class)."""

    werkhub_url = Unicode(
        "", help="Base URL of the werkhub service, e.g. http://127.0.0.1:10101/services/werkhub"
    ).tag(config=True)
    werkhub_token = Unicode("", help="API token of the hub's werkhub-spawner identity").tag(
        config=True
    )
    images = Dict(
        {"default": "The project's own environment"},
        help="Curated images users may choose: name -> description",
    ).tag(config=True)
    default_image = Unicode("default", help="Image used when none is chosen").tag(config=True)

    gpu_booking: dict[str, Any] | None = None
    gpu_assignment: GpuAssignment | None = None
    gpu_devices: list[dict[str, Any]] = []
    spawn_options: SpawnOptions | None = None

    @default("options_form")
    def _form_default(self) -> Any:
        return lambda spawner: spawner._options_form()

    @default("apply_user_options")
    def _apply_default(self) -> Any:
        return lambda spawner, user_options: spawner.validate_options(user_options)

    def validate_options(self, user_options: dict[str, Any] | None) -> None:
        """Untrusted options (form or REST body) -> SpawnOptions, or HTTP 400."""
        try:
            self.spawn_options = parse_options(user_options, list(self.images), self.default_image)
        except SpawnOptionError as exc:
            # do not keep refused options as the defaults of the next spawn
            self.orm_spawner.user_options = {}  # type: ignore[attr-defined]
            raise web.HTTPError(400, str(exc), reason=str(exc)[:200]) from None

    @property
    def booking_client(self) -> BookingClient:
        return BookingClient(self.werkhub_url, self.werkhub_token)

    def _progress(self, message: str) -> None:
        queue = getattr(self, "_werkhub_progress", None)
        if queue is None:
            queue = self._werkhub_progress = []  # type: ignore[attr-defined]
        queue.append(message)

    async def _options_form(self) -> str:
        """The form shows the user's booking and what is free now."""
        client = self.booking_client
        booking = None
        free: dict[str, int] = {}
        try:
            reply = await client.call(
                "POST", "/api/spawn/prepare", json={"user": self.user.name, "gpu": "booking"}
            )
            booking = reply["booking"]
        except web.HTTPError:
            booking = None
        try:
            free = await client.call("GET", "/api/spawn/free")
        except web.HTTPError:
            free = {}
        return options_form(self.images, self.default_image, booking, free)

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        return {
            k: v[0] if isinstance(v, list) and len(v) == 1 else v
            for k, v in formdata.items()
            if k != "_xsrf"
        }

    async def prepare_gpus(self) -> None:
        options = self.spawn_options or parse_options({}, list(self.images), self.default_image)
        self._progress("Checking your GPU booking")
        reply = await self.booking_client.call(
            "POST",
            "/api/spawn/prepare",
            json={
                "user": self.user.name,
                "gpu": options.gpu,
                "booking_id": options.booking_id,
                "gpu_type": options.gpu_type,
                "count": options.count,
                "duration_minutes": options.duration_minutes,
            },
        )
        self.gpu_booking = reply["booking"]
        self.gpu_devices = reply["devices"]
        try:
            self.gpu_assignment = (
                assignment_from_devices(self.gpu_booking, self.gpu_devices)
                if self.gpu_booking
                else None
            )
            self.apply_gpu_assignment(self.gpu_assignment)
        except GpuAssignmentError as exc:
            raise web.HTTPError(409, str(exc), reason=str(exc)[:200]) from None
        self._progress(reply["message"])

    def apply_gpu_assignment(self, assignment: GpuAssignment | None) -> None:
        """Backends that configure devices outside the environment override this."""

    async def _prepare_or_forget(self) -> None:
        try:
            await self.prepare_gpus()
        except web.HTTPError:
            self.orm_spawner.user_options = {}  # type: ignore[attr-defined]
            raise

    async def start(self) -> Any:
        self._werkhub_progress = []  # type: ignore[attr-defined]
        await self._prepare_or_forget()
        self._progress("Starting your server")
        result = await super().start()  # type: ignore[misc]
        if self.gpu_booking:
            await self.booking_client.call(
                "POST", "/api/spawn/started", json={"booking_id": self.gpu_booking["id"]}
            )
        return result

    async def stop(self, now: bool = False) -> Any:
        result = await super().stop(now=now)  # type: ignore[misc]
        if self.gpu_booking:
            booking_id = self.gpu_booking["id"]
            try:
                await self.booking_client.call(
                    "POST", "/api/spawn/stopped", json={"booking_id": booking_id}
                )
            except web.HTTPError as exc:
                self.log.warning("could not record the end of GPU use: %s", exc)  # type: ignore[attr-defined]
        return result

    async def progress(self) -> Any:
        sent = 0
        while True:
            queue = getattr(self, "_werkhub_progress", [])
            while sent < len(queue):
                yield {"progress": min(90, 10 + 20 * sent), "message": queue[sent]}
                sent += 1
            if self._spawn_future is not None and self._spawn_future.done():  # type: ignore[attr-defined]
                return
            await asyncio.sleep(0.2)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        if self.gpu_booking:
            state["werkhub_booking"] = self.gpu_booking["id"]
            state["werkhub_devices"] = self.gpu_devices
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        if "werkhub_booking" in state:
            self.gpu_booking = {"id": state["werkhub_booking"]}
            self.gpu_devices = state.get("werkhub_devices", [])
            self.gpu_assignment = None

    def clear_state(self) -> None:
        super().clear_state()  # type: ignore[misc]
        self.gpu_booking = None
        self.gpu_devices = []
        self.gpu_assignment = None
