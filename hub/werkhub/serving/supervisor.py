"""Keeps every endpoint's scoring server in the state its owner asked for.

One :class:`Live` per endpoint in memory (the database keeps what survives a restart).
A server is started (model fetched, GPUs booked, process or container started), counted
ready only after it answers ``/ping`` and the registered input example, and then takes
traffic. A rollout starts the new version beside the old one and switches only after the
same check; a version that fails it never takes traffic. Crashed servers are restarted
with back-off; idle ones scale to zero when their owner allows it, and the next request
starts them again (every request arriving meanwhile waits for the same start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from werkhub import http
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError
from werkhub.booking.settings import Caller
from werkhub.config.schema import ServingSection
from werkhub.errors import Unavailable
from werkhub.sandbox.spec import unit_indexes
from werkhub.serving import spec as rules
from werkhub.serving.live import Live
from werkhub.serving.models import ModelSource, ModelVersion, input_example
from werkhub.serving.replicas import Backend, Replica, ReplicaSpec
from werkhub.serving.store import EndpointStore, Viewer

log = logging.getLogger("werkhub.serving")
ACTOR = "werkhub-serving"
#: extend a GPU endpoint's booking when less than this is left
EXTEND_BEFORE = timedelta(minutes=15)


class StartFailed(Unavailable, RuntimeError):
    """A server did not come up; the message says why (with its log's last lines)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Supervisor:
    def __init__(
        self,
        store: EndpointStore,
        models: ModelSource,
        backend: Backend,
        cfg: ServingSection,
        folder: Path,
        bookings: Any = None,
        groups_of: Callable[[str], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.store, self.models, self.backend, self.cfg = store, models, backend, cfg
        self.folder = folder
        self.bookings = bookings
        self.groups_of = groups_of
        self.live: dict[int, Live] = {}
        self.paths: dict[tuple[str, str], int] = {}
        #: endpoint tokens used since the last check (the gateway's), to note their last use
        self.used_tokens: Callable[[], dict[int, float]] | None = None
        # scoring servers listen on loopback HTTP; connections are kept and reused
        self.client = http.async_client(
            timeout=cfg.request_timeout_seconds + 5,
            verify=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
        )
        self._task: asyncio.Task[None] | None = None

    # lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Take over the endpoints in the database: servers of min_replicas 1 start
        (containers a killed werkhub left behind are removed first)."""
        leftovers = getattr(self.backend, "remove_leftovers", None)
        if leftovers is not None:
            with contextlib.suppress(Exception):
                await leftovers()
        for row in await asyncio.to_thread(self.store.all):
            live = self._adopt(row)
            if row["settings"].get("min_replicas", 1) == 1:
                self._begin(live)
            else:
                await self._set(live, state="scaled_to_zero", reason="")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for live in list(self.live.values()):
            await self._flush(live)
            if live.starting is not None:
                live.starting.cancel()
                with contextlib.suppress(BaseException):
                    await live.starting
            await self._shutdown(live, release=False)
        await self.client.aclose()

    def _adopt(self, row: dict[str, Any]) -> Live:
        live = Live(id=row["id"], owner=row["owner"], name=row["name"], row=row)
        self.live[row["id"]] = live
        self.paths[(live.owner, live.name)] = live.id
        return live

    def find(self, owner: str, name: str) -> Live | None:
        endpoint_id = self.paths.get((owner, name))
        return None if endpoint_id is None else self.live.get(endpoint_id)

    # API-facing operations -----------------------------------------------------------
    async def created(self, row: dict[str, Any], booking: dict[str, Any] | None) -> Live:
        live = self._adopt(row)
        if booking is not None:
            live.booking_id = booking["id"]
        self._begin(live)
        return live

    async def changed(self, row: dict[str, Any], moved: bool) -> None:
        live = self.live.get(row["id"]) or self._adopt(row)
        old_resources = live.settings.get("resources")
        live.row = row
        resized = old_resources != row["settings"].get("resources")
        if (moved or resized) and live.replica is not None:
            live.rollout = asyncio.create_task(self._rollout(live, reason="changed"))
        elif live.replica is None and live.starting is None and row["settings"]["min_replicas"]:
            self._begin(live)

    async def deleted(self, endpoint_id: int) -> None:
        live = self.live.pop(endpoint_id, None)
        if live is None:
            return
        self.paths.pop((live.owner, live.name), None)
        live.deleted = True
        if live.starting is not None:
            live.starting.cancel()
            with contextlib.suppress(BaseException):
                await live.starting
        async with live.lock:
            await self._shutdown(live, release=True)
        await asyncio.to_thread(shutil.rmtree, self.folder / str(endpoint_id), True)

    async def ready_replica(self, live: Live) -> Replica:
        """The replica that answers now; a scaled-to-zero or failed endpoint is started and
        the caller waits for it (up to the cold-start limit)."""
        live.last_request = time.monotonic()
        if live.replica is not None:
            return live.replica
        task = self._begin(live)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.cfg.cold_start_timeout_seconds)
        except TimeoutError:
            raise StartFailed(
                f"endpoint {live.path} did not start within "
                f"{self.cfg.cold_start_timeout_seconds:.0f} s; try again shortly"
            ) from None

    def record(
        self,
        live: Live,
        status: int,
        latency_ms: float,
        caller: str,
        request: bytes,
        response: bytes,
    ) -> None:
        now = time.time()
        live.meter.add(now, latency_ms, status >= 500 or status == 0, live.version)
        if live.row["settings"].get("request_logging"):
            limit = self.cfg.log_chars
            live.pending_logs.append(
                {
                    "at": now,
                    "caller": caller[:100],
                    "status": status,
                    "latency_ms": round(latency_ms, 3),
                    "version": live.version,
                    "request": rules.clip(request.decode("utf-8", "replace"), limit),
                    "response": rules.clip(response.decode("utf-8", "replace"), limit),
                }
            )
            del live.pending_logs[: -rules.LOG_KEEP]

    def current_figures(self, live: Live) -> dict[str, Any] | None:
        """The figures of the minute still running (not yet in the database)."""
        if not live.meter.latencies:
            return None
        return rules.summarise(
            live.meter.minute, live.meter.latencies, live.meter.errors, live.version
        )

    # starting ------------------------------------------------------------------------
    def _begin(self, live: Live) -> asyncio.Task[Replica]:
        if live.starting is None or live.starting.done():
            live.starting = asyncio.create_task(self._start(live))
            live.starting.add_done_callback(_quiet)
        return live.starting

    async def _start(self, live: Live) -> Replica:
        async with live.lock:
            if live.replica is not None:
                return live.replica
            await self._set(live, state="starting", reason="")
            try:
                model = await self._target(live)
                replica = await self._launch(live, model, live.booking_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                live.failures += 1
                live.retry_at = time.monotonic() + rules.backoff(live.failures)
                await self._release(live)
                tail = getattr(exc, "log_tail", "")
                await self._set(live, state="failed", reason=str(exc)[:2000], log_tail=tail)
                log.warning("endpoint %s failed to start: %s", live.path, exc)
                raise StartFailed(f"endpoint {live.path} failed to start: {exc}") from None
            live.replica, live.version = replica, replica.spec.version
            live.failures = 0
            await self._set(
                live, state="ready", reason="", serving_version=replica.spec.version, log_tail=""
            )
            log.info("endpoint %s serves version %s", live.path, replica.spec.version)
            return replica

    async def _target(self, live: Live) -> ModelVersion:
        row = live.row
        model = await self.models.resolve(
            Viewer(name=ACTOR, admin=True), row["model"], row["alias"], row["version"]
        )
        live.alias_checked = time.monotonic()
        return model

    async def _launch(self, live: Live, model: ModelVersion, booking_id: int | None) -> Replica:
        """Fetch, book (unless given), start and check one server; on failure nothing of
        it is left (the booking it made is released)."""
        model_dir = await self.models.fetch(model)
        settings = live.settings
        resources = settings["resources"]
        gpu = resources.get("gpu")
        booking = None
        made_booking = False
        if gpu and booking_id is None:
            booking = await self._book(live, gpu)
            made_booking = True
        elif gpu and booking_id is not None:
            booking = await asyncio.to_thread(self.bookings.get, Caller(ACTOR, True), booking_id)
            await asyncio.to_thread(self.bookings.mark_in_use, booking_id, ACTOR)
        devices = tuple(booking["devices"]) if booking else ()
        spec = ReplicaSpec(
            endpoint_id=live.id,
            owner=live.owner,
            name=live.name,
            version=model.version,
            model_dir=model_dir,
            port=free_port(),
            workdir=self.folder / str(live.id) / f"v{model.version}-{time.monotonic_ns()}",
            cpu=resources.get("cpu"),
            memory=resources.get("memory"),
            gpu_type=gpu["type"] if gpu else None,
            gpu_indexes=tuple(unit_indexes(",".join(devices))) if devices else (),
            request_timeout_s=self.cfg.request_timeout_seconds,
        )
        replica = None
        try:
            replica = await self.backend.start(spec)
            await self._check(replica, model_dir)
        except BaseException as exc:
            tail = await asyncio.to_thread(self.backend.log_tail, replica) if replica else ""
            if replica is not None:
                with contextlib.suppress(Exception):
                    await self.backend.stop(replica, grace=2)
            if made_booking and booking is not None:
                await self.release_booking(live.owner, booking["id"])
            await asyncio.to_thread(shutil.rmtree, spec.workdir, True)
            if isinstance(exc, Exception):
                failure = StartFailed(f"version {model.version}: {exc}")
                failure.log_tail = tail  # type: ignore[attr-defined]
                raise failure from None
            raise
        if booking is not None:
            live.booking_id = booking["id"]
        return replica

    async def _check(self, replica: Replica, model_dir: Path) -> None:
        """Ready: ``/ping`` answers 200, then the registered input example is answered."""
        deadline = time.monotonic() + self.cfg.ready_timeout_seconds
        pause = 0.05
        while True:
            code = await self.backend.exited(replica)
            if code is not None:
                raise RuntimeError(f"the scoring server exited with status {code}")
            try:
                reply = await self.client.get(f"{replica.url}/ping", timeout=2)
                if reply.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the scoring server did not answer /ping within "
                    f"{self.cfg.ready_timeout_seconds:.0f} s"
                )
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 1.5)
        example = await asyncio.to_thread(input_example, model_dir)
        if example is None:
            return
        reply = await self.client.post(
            f"{replica.url}/invocations",
            content=example,
            headers={"Content-Type": "application/json"},
        )
        if reply.status_code != 200:
            raise RuntimeError(
                f"the registered input example was answered {reply.status_code}: {reply.text[:300]}"
            )

    async def book_for(self, owner: str, gpu: dict[str, Any]) -> dict[str, Any]:
        """A GPU booking of kind ``endpoint`` from now, in use at once; the ledger's
        refusal (unknown type, quota, no free GPUs) is raised as it is."""
        if self.bookings is None:
            raise Unavailable("GPU endpoints need the booking ledger")
        groups = await self.groups_of(owner) if self.groups_of else []
        booking, _ = await asyncio.to_thread(
            self.bookings.create,
            Caller(name=owner),
            owner,
            groups,
            gpu["type"],
            int(gpu["count"]),
            None,
            None,
            timedelta(minutes=self.cfg.gpu_booking_minutes),
            kind="endpoint",
        )
        await asyncio.to_thread(self.bookings.mark_in_use, booking["id"], ACTOR)
        return booking

    async def _book(self, live: Live, gpu: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.book_for(live.owner, gpu)
        except LedgerError as exc:
            raise RuntimeError(f"no GPUs: {exc.message}") from None

    async def release_booking(self, owner: str, booking_id: int) -> None:
        try:
            await asyncio.to_thread(self.bookings.release, Caller(name=owner), booking_id)
        except Exception as exc:  # already ended (its end passed, or an admin released it)
            log.info("endpoint booking %s not released: %s", booking_id, exc)

    async def _release(self, live: Live) -> None:
        if live.booking_id is not None and self.bookings is not None:
            booking_id, live.booking_id = live.booking_id, None
            await self.release_booking(live.owner, booking_id)

    # stopping and rolling out --------------------------------------------------------
    async def _shutdown(self, live: Live, release: bool, reason: str = "") -> None:
        replica, live.replica = live.replica, None
        if replica is not None:
            with contextlib.suppress(Exception):
                await self.backend.stop(replica)
            await asyncio.to_thread(shutil.rmtree, replica.spec.workdir, True)
        if release:
            await self._release(live)

    async def _drain(self, live: Live, replica: Replica) -> None:
        deadline = time.monotonic() + self.cfg.request_timeout_seconds + 5
        while live.inflight.get(id(replica), 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        live.inflight.pop(id(replica), None)

    async def _rollout(self, live: Live, reason: str) -> None:
        """Start the target version beside the serving one; switch after its check."""
        async with live.lock:
            old = live.replica
            if old is None or live.deleted:
                return
            try:
                model = await self._target(live)
            except Exception as exc:
                await self._set(live, reason=f"rollout not started: {exc}"[:2000])
                return
            same_resources = old.spec.cpu == live.settings["resources"].get("cpu") and (
                old.spec.memory == live.settings["resources"].get("memory")
            )
            if model.version == live.version and same_resources and reason == "alias":
                return
            old_booking = live.booking_id
            live.booking_id = None
            try:
                new = await self._launch(live, model, None)
            except Exception as exc:
                live.booking_id = old_booking
                await self._set(
                    live,
                    reason=f"version {model.version} was not rolled out: {exc}"[:2000],
                    log_tail=getattr(exc, "log_tail", ""),
                )
                log.warning("endpoint %s: rollout to %s failed: %s", live.path, model.version, exc)
                return
            live.replica, live.version = new, new.spec.version  # traffic switches here
            await self._set(
                live, state="ready", reason="", serving_version=new.spec.version, log_tail=""
            )
            log.info("endpoint %s rolled out version %s", live.path, new.spec.version)
        await self._drain(live, old)
        with contextlib.suppress(Exception):
            await self.backend.stop(old)
        await asyncio.to_thread(shutil.rmtree, old.spec.workdir, True)
        if old_booking is not None:
            await self.release_booking(live.owner, old_booking)

    # the periodic check --------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.check_seconds)
            for live in list(self.live.values()):
                try:
                    await self.check(live)
                except Exception:
                    log.exception("checking endpoint %s failed", live.path)
            if self.used_tokens is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.store.touch_tokens, self.used_tokens())

    async def check(self, live: Live) -> None:
        now = time.monotonic()
        replica = live.replica
        settings = live.settings
        if replica is not None and not live.lock.locked():
            code = await self.backend.exited(replica)
            if code is not None:
                tail = await asyncio.to_thread(self.backend.log_tail, replica)
                async with live.lock:
                    await self._shutdown(live, release=True)
                live.failures += 1
                live.retry_at = now + rules.backoff(live.failures)
                await self._set(
                    live,
                    state="failed",
                    reason=f"the scoring server exited with status {code}; restarting",
                    log_tail=tail,
                )
                log.warning("endpoint %s crashed (status %s)", live.path, code)
            elif rules.scale_to_zero(
                settings["min_replicas"],
                settings["idle_minutes"],
                live.last_request,
                now,
                sum(live.inflight.values()),
            ):
                async with live.lock:
                    await self._shutdown(live, release=True)
                await self._set(live, state="scaled_to_zero", reason="")
                log.info("endpoint %s scaled to zero", live.path)
            else:
                await self._follow_alias(live, now)
                await self._extend(live)
        elif (
            replica is None
            and live.row.get("state") == "failed"
            and (live.starting is None or live.starting.done())
            and now >= live.retry_at
            and (settings["min_replicas"] == 1 or now - live.last_request < 60 * 5)
        ):
            self._begin(live)
        await self._flush(live)

    async def _follow_alias(self, live: Live, now: float) -> None:
        if live.row["alias"] is None or now - live.alias_checked < self.cfg.alias_poll_seconds:
            return
        live.alias_checked = now
        try:
            model = await self._target(live)
        except Exception as exc:
            log.info("endpoint %s: alias not resolved: %s", live.path, exc)
            return
        if model.version != live.version:
            live.rollout = asyncio.create_task(self._rollout(live, reason="alias"))

    async def _extend(self, live: Live) -> None:
        if live.booking_id is None or self.bookings is None:
            return
        booking = await asyncio.to_thread(self.bookings.get, Caller(ACTOR, True), live.booking_id)
        if booking["end"] - ledger.utcnow() > EXTEND_BEFORE:
            return
        groups = await self.groups_of(live.owner) if self.groups_of else []
        try:
            await asyncio.to_thread(
                self.bookings.change,
                Caller(name=live.owner),
                live.booking_id,
                groups,
                end=booking["end"] + timedelta(minutes=self.cfg.gpu_booking_minutes),
            )
        except LedgerError as exc:
            await self._set(live, reason=f"the GPU booking could not be extended: {exc.message}")

    async def flush(self, live: Live) -> None:
        """Write the finished minutes' figures and the pending request logs."""
        await self._flush(live)

    async def _flush(self, live: Live) -> None:
        figures = live.meter.take(time.time(), live.version)
        logs, live.pending_logs = live.pending_logs, []
        if live.deleted:
            return
        if figures:
            await asyncio.to_thread(self.store.add_minutes, live.id, figures)
        if logs:
            await asyncio.to_thread(self.store.add_logs, live.id, logs)

    async def _set(self, live: Live, **values: Any) -> None:
        if live.deleted:
            return
        live.row = {**live.row, **values}
        await asyncio.to_thread(self.store.update, live.id, **values)


def _quiet(task: asyncio.Task[Any]) -> None:
    """Failed starts are reported through the endpoint's state, not the event loop's log."""
    if not task.cancelled():
        task.exception()
