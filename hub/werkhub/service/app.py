"""The werkhub service: one FastAPI app under ``/services/werkhub/``, started by the hub."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from werkhub import __version__
from werkhub.auth.hub import HubAuthenticator, HubUser, NeedsLogin
from werkhub.booking import ledger
from werkhub.booking.idle import SampleWindow, idle_verdicts
from werkhub.booking.ledger import Unit
from werkhub.booking.manager import BookingManager, Settings
from werkhub.booking.servers import ServerControl
from werkhub.config.load import load_config
from werkhub.db import make_engines, upgrade
from werkhub.gpus import sampler as gpu_sampler
from werkhub.gpus.inventory import build_units, describe
from werkhub.gpus.sampler import device_indexes
from werkhub.jobs.setup import build_scheduler
from werkhub.jobs.spec import MAX_PARAMETERS_BYTES
from werkhub.service.bodies import BodyLimit, Override
from werkhub.service.bookings import build_router, install_error_handlers
from werkhub.service.experiments import build_tracking_router
from werkhub.service.jobs import build_jobs_router
from werkhub.service.pages import install_pages
from werkhub.service.spawn import build_spawn_router
from werkhub.service.users import build_admin_router

log = logging.getLogger("werkhub.service.app")
MAX_BODY = 64 * 1024
#: a job definition may carry up to 64 KiB of parameters (JSON) besides its other fields
MAX_JOB_BODY = 4 * MAX_PARAMETERS_BYTES


def body_overrides(prefix: str) -> list[Override]:
    """Routes that legitimately take more than ``MAX_BODY``."""
    return [
        Override("POST", f"{prefix}/api/jobs", MAX_JOB_BODY),
        Override("PATCH", f"{prefix}/api/jobs/{{job_id}}", MAX_JOB_BODY),
    ]


async def current_user(request: Request) -> HubUser:
    """FastAPI dependency: the hub-authenticated caller (401/403 or a login redirect).

    Requests with a body were already authenticated by the body middleware (before their
    body was read); their caller is kept on ``request.state``."""
    known = getattr(request.state, "werkhub_user", None)
    if isinstance(known, HubUser):
        return known
    return await request.app.state.auth.identify(request)


async def authenticate_first(request: Request) -> Response | None:
    """Identify the caller of a request that carries a body before reading it: a refusal
    (401/403, or the login redirect) to answer at once, or None with the caller kept."""
    try:
        request.state.werkhub_user = await request.app.state.auth.identify(request)
    except NeedsLogin as exc:
        return request.app.state.auth.login_redirect(exc.next_url)
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    return None


CurrentUser = Annotated[HubUser, Depends(current_user)]


class Health(BaseModel):
    status: str
    version: str


def booking_manager(config_file: str | None, db_url: str) -> tuple[BookingManager, dict]:
    cfg = load_config(config_file or None)
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    settings = Settings(
        units=tuple(build_units(cfg.gpus)),
        policies=cfg.booking.policies,
        tz=ZoneInfo(cfg.services.werkhub.time_zone),
        no_show_minutes=cfg.booking.no_show_minutes,
        warn_minutes=cfg.booking.warn_minutes,
        end_action=cfg.booking.end_action,
        idle=cfg.booking.idle.model_copy(
            update={"sample_interval_seconds": float(cfg.booking.tick_seconds)}
        ),
    )
    return BookingManager(writer, reader, settings), describe(cfg.gpus)


def local_gpu_units(units: tuple[Unit, ...]) -> dict[str, int]:
    """Real (not simulated) units on this machine: the only ones NVML can sample here."""
    real = [u for u in units if not u.simulated]
    nodes = {u.node for u in real}
    node = next(iter(nodes)) if len(nodes) == 1 else socket.gethostname().split(".")[0].lower()
    return device_indexes([u.id for u in real], node=node)


async def watch_idle(app: FastAPI, window: SampleWindow, local: dict[str, int]) -> None:
    """Sample this machine's booked GPUs; report or release bookings idle for too long."""
    manager: BookingManager = app.state.bookings
    now = ledger.utcnow()
    window.add(await asyncio.to_thread(gpu_sampler.sample, local, now))
    window.prune(now)
    active = await asyncio.to_thread(manager.active_slots)
    verdicts = idle_verdicts(
        window.samples(),
        {s.id: s.devices for s in active},
        now,
        manager.settings.idle,
        since={s.id: s.start for s in active},
    )
    for slot in active:
        verdict = verdicts[slot.id]
        if verdict.action == "none":
            continue
        acted = await asyncio.to_thread(manager.idle_action, slot.id, verdict)
        if acted and verdict.action == "release" and slot.user in app.state.last_running:
            downgrade = manager.settings.end_action == "downgrade"
            await app.state.servers.end_gpu_server(slot.user, downgrade=downgrade)


async def tick_forever(app: FastAPI, interval: float) -> None:
    """Move bookings through time: activation, no-shows, ends, usage, waitlist; idle GPUs."""
    local = local_gpu_units(app.state.bookings.settings.units)
    window = SampleWindow.for_policy(app.state.bookings.settings.idle)
    app.state.last_running = set()
    while True:
        try:
            running = app.state.last_running = await app.state.auth.running_users()
            result = await asyncio.to_thread(app.state.bookings.tick, running)
            action = app.state.bookings.settings.end_action
            for user, booking_id in result["ended_running"]:
                log.info("booking %s of %s ended: %s its server", booking_id, user, action)
                await app.state.servers.end_gpu_server(user, downgrade=action == "downgrade")
        except Exception:
            log.exception("booking tick failed; retrying")
        if local:
            try:
                await watch_idle(app, window, local)
            except Exception:
                log.exception("idle GPU check failed; retrying")
        await asyncio.sleep(interval)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def create_app(prefix: str | None = None) -> FastAPI:
    """Build the app; ``prefix`` defaults to the hub-provided ``JUPYTERHUB_SERVICE_PREFIX``."""
    prefix = (prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/werkhub/")).rstrip(
        "/"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.auth = HubAuthenticator()
        app.state.servers = ServerControl(app.state.auth)
        state_dir = os.environ.get("WERKHUB_STATE", ".werkhub")
        db_url = os.environ.get("WERKHUB_DB_URL") or f"sqlite:///{state_dir}/werkhub.sqlite"
        manager, inventory = await asyncio.to_thread(
            booking_manager, os.environ.get("WERKHUB_CONFIG"), db_url
        )
        app.state.bookings, app.state.inventory = manager, inventory
        interval = float(os.environ.get("WERKHUB_TICK_SECONDS", "30"))
        ticker = asyncio.create_task(tick_forever(app, interval))
        app.state.jobs = await asyncio.to_thread(
            build_scheduler, manager, inventory, app.state.auth, prefix
        )
        if app.state.jobs is not None:
            await app.state.jobs.start()
        yield
        if app.state.jobs is not None:
            await app.state.jobs.stop()
        ticker.cancel()
        with suppress(asyncio.CancelledError):
            await ticker
        await app.state.auth.aclose()
        manager.writer.dispose()
        manager.reader.dispose()

    app = FastAPI(
        title="werkhub",
        version=__version__,
        description="GPU booking, jobs, reports and usage for the werkhub workbench.",
        openapi_url=f"{prefix}/api/openapi.json",
        docs_url=None,  # Swagger UI would load assets from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.exception_handler(NeedsLogin)
    async def _login(request: Request, exc: NeedsLogin) -> Response:
        return request.app.state.auth.login_redirect(exc.next_url)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": _validation_message(exc), "errors": jsonable_errors(exc)}, 422
        )

    install_error_handlers(app)

    api = APIRouter(prefix=f"{prefix}/api", tags=["core"])

    @api.get("/health", response_model=Health, summary="Liveness of the service")
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    @api.get("/me", response_model=HubUser, summary="The caller: name, admin flag and groups")
    async def me(user: CurrentUser) -> HubUser:
        return user

    app.include_router(api)
    app.include_router(build_router(prefix, current_user))
    app.include_router(build_spawn_router(prefix, current_user))
    app.include_router(build_jobs_router(prefix, current_user))
    app.include_router(build_tracking_router(prefix, current_user))
    app.include_router(build_admin_router(prefix, current_user))

    @app.get(f"{prefix}/oauth_callback", include_in_schema=False)
    async def oauth_callback(request: Request) -> Response:
        return await request.app.state.auth.finish_login(request)

    # pages (/, /book, /jobs, /reports, /admin), templates and restart APIs, CSRF check
    install_pages(app, prefix, current_user)

    @app.get(prefix, include_in_schema=False)
    async def bare() -> RedirectResponse:
        return RedirectResponse(f"{prefix}/")

    # outermost: authenticate, then count body bytes, before anything reads a body
    app.add_middleware(
        BodyLimit,
        default=MAX_BODY,
        authenticate=authenticate_first,
        overrides=body_overrides(prefix),
    )

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        detail = getattr(exc, "detail", None)
        if detail and detail != "Not Found":
            return JSONResponse({"detail": detail}, 404)
        return JSONResponse({"detail": f"No such werkhub endpoint: {request.url.path}"}, 404)

    return app


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]


def main() -> None:
    import uvicorn

    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    uvicorn.run(
        create_app(),
        host=url.hostname or "127.0.0.1",
        port=url.port or 10101,
        log_level="info",
        # one access-log line per request costs CPU under load; the hub logs requests
        access_log=os.environ.get("WERKHUB_ACCESS_LOG", "") == "1",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
