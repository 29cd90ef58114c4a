"""The werkhub service: one FastAPI app under ``/services/werkhub/``, started by the hub."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel

from werkhub import __version__
from werkhub.auth.hub import HubAuthenticator, HubUser, NeedsLogin
from werkhub.booking import guarantees, ledger
from werkhub.booking.idle import SampleWindow, idle_verdicts
from werkhub.booking.ledger import Unit
from werkhub.booking.manager import BookingManager, Settings
from werkhub.booking.quota import LayeredPolicies
from werkhub.booking.servers import ServerControl
from werkhub.config.env import ServiceEnv, read_env
from werkhub.config.load import load_config
from werkhub.config.schema import WerkhubConfig
from werkhub.config.wiring import SERVER_KEEP_ALIVE, endpoints_prefix
from werkhub.db import make_engines, upgrade
from werkhub.gpus import sampler as gpu_sampler
from werkhub.gpus.inventory import build_units, describe
from werkhub.gpus.sampler import device_indexes
from werkhub.jobs.setup import build_scheduler
from werkhub.jobs.spec import MAX_PARAMETERS_BYTES
from werkhub.orgs.policies import OrgPolicies
from werkhub.orgs.store import OrgStore
from werkhub.service import (
    bookings,
    endpoints,
    experiments,
    federation_pages,
    federations,
    jobs,
    org_admin,
    org_pages,
    org_policies,
    org_signups,
    org_statements,
    orgs,
    probe,
    slurm_sync,
    spawn,
    users,
)
from werkhub.service.bodies import BodyLimit, Override
from werkhub.service.errors import install_error_handlers
from werkhub.service.gates import LedgerGates, WriteBatches
from werkhub.service.identity import CurrentUser
from werkhub.service.pages import install_pages
from werkhub.serving.gateway import EndpointRoutes

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


class Health(BaseModel):
    status: str
    version: str


def booking_manager(cfg: WerkhubConfig, db_url: str) -> tuple[BookingManager, dict]:
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    settings = Settings(
        units=tuple(build_units(cfg.gpus)),
        # organisations' admins set policies over the configured ones (werkhub.orgs.policies)
        policies=LayeredPolicies(cfg.booking.policies),
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


async def end_server(app: FastAPI, user: str, booking_id: int, downgrade: bool) -> None:
    """Stop (or restart CPU-only) a server whose booking no longer holds devices. When that
    fails (the hub did not answer, the stop did not finish), the next tick tries again:
    a server never keeps its devices because one request was lost."""
    try:
        await app.state.servers.end_gpu_server(user, downgrade=downgrade)
    except Exception:
        log.exception("ending %s's server after booking %s failed; retrying", user, booking_id)
        await asyncio.to_thread(app.state.bookings.servers.end_failed, user, booking_id)


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
            await end_server(app, slot.user, slot.id, downgrade=downgrade)


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
            ended = result["ended_running"]
            # a reclaimed borrowed booking's server always restarts without GPUs
            cut = await asyncio.to_thread(
                guarantees.reclaimed, app.state.bookings.reader, [b for _, b in ended]
            )
            for user, booking_id in ended:
                downgrade = action == "downgrade" or booking_id in cut
                log.info("booking %s of %s ended (downgrade: %s)", booking_id, user, downgrade)
                await end_server(app, user, booking_id, downgrade=downgrade)
        except Exception:
            log.exception("booking tick failed; retrying")
        if local:
            try:
                await watch_idle(app, window, local)
            except Exception:
                log.exception("idle GPU check failed; retrying")
        await asyncio.sleep(interval)


NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


def settle_heap() -> None:
    """For the service's own process, once started. What start-up made lives as long as
    the process (modules, the app, SQLAlchemy's and pydantic's structures: ~200k objects):
    frozen out of the collector's sight, so its full collections do not walk them. Each
    took 110-230 ms with the event loop stopped, 13 times in one benchmark run: every
    request in flight waited for it. And a young collection after 10,000 new objects
    instead of 700: it walks what the requests in flight hold, so fewer of them do less
    work (the collector's own cost was about a fifth of a booking create's CPU). Not for
    apps built inside another process (tests): frozen cycles are never collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def create_app(prefix: str | None = None, env: ServiceEnv | None = None) -> FastAPI:
    """Build the app. ``env`` (what the hub passed in the environment) is read here, once,
    unless given; ``prefix`` overrides its ``JUPYTERHUB_SERVICE_PREFIX``."""
    env = env or read_env()
    if prefix is not None:
        env = replace(env, prefix=prefix.rstrip("/"))
    prefix = env.prefix

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.auth = HubAuthenticator()
        app.state.servers = ServerControl(app.state.auth)
        # werkhub.yaml is loaded here, once; everything below gets it passed down
        cfg = await asyncio.to_thread(load_config, env.config_file)
        # slurm.enabled: the GPUs booked are the Slurm cluster's (docs/slurm.md)
        cfg, app.state.slurm_sync = await asyncio.to_thread(slurm_sync.connect, cfg)
        app.state.config = cfg
        manager, inventory = await asyncio.to_thread(booking_manager, cfg, env.db_url)
        app.state.bookings, app.state.inventory = manager, inventory
        slurm_sync.start(app)
        app.state.gates = LedgerGates.for_backend(manager.writer.dialect.name)
        app.state.batches = WriteBatches.for_backend(
            app.state.gates, manager.batch, manager.writer.dialect.name
        )
        app.state.orgs = OrgStore(manager.writer, manager.reader)
        layered = manager.settings.policies
        app.state.org_policies = OrgPolicies(
            manager.writer,
            manager.reader,
            layered if isinstance(layered, LayeredPolicies) else None,
        )
        await asyncio.to_thread(app.state.org_policies.refresh)
        await federations.open_federations(app, cfg, env, manager)
        ticker = asyncio.create_task(tick_forever(app, env.tick_seconds))
        app.state.jobs = await asyncio.to_thread(
            build_scheduler, cfg, env, manager, inventory, app.state.auth
        )
        if app.state.jobs is not None:
            await app.state.jobs.start()
        app.state.serving = None
        if cfg.serving.enabled:
            from werkhub.serving.setup import build

            app.state.serving = await asyncio.to_thread(build, cfg, env, manager, app.state.auth)
            await app.state.serving.supervisor.start()
            app.state.endpoint_gateway = app.state.serving.gateway
        if getattr(app.state, "own_process", False):
            settle_heap()
        yield
        await federations.close_federations(app)
        if app.state.serving is not None:
            app.state.endpoint_gateway = None
            await app.state.serving.supervisor.stop()
            await app.state.serving.gateway.aclose()
        if app.state.jobs is not None:
            await app.state.jobs.stop()
        ticker.cancel()
        with suppress(asyncio.CancelledError):
            await ticker
        await slurm_sync.stop(app)
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
        # FastAPI's built-in OpenTelemetry: off, whatever providers an imported library set
        # up or FASTAPI_OTEL_AUTO_CONFIGURE says (nothing leaves the site; it also cost a
        # tenth of the CPU of every request)
        telemetry=NO_TELEMETRY,
    )

    app.state.env = env
    app.state.endpoints_prefix = endpoints_prefix(env.hub_base_url)
    install_error_handlers(app)

    api = APIRouter(prefix=f"{prefix}/api", tags=["core"])

    @api.get("/health", response_model=Health, summary="Liveness of the service")
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    @api.get("/me", response_model=HubUser, summary="The caller: name, admin flag and groups")
    async def me(user: CurrentUser) -> HubUser:
        return user

    app.include_router(api)
    for module in (bookings, spawn, experiments, users, jobs, probe, endpoints, orgs):
        app.include_router(module.router, prefix=prefix)
    app.include_router(slurm_sync.router, prefix=prefix)
    app.include_router(org_statements.router, prefix=prefix)
    app.include_router(org_admin.router, prefix=prefix)
    app.include_router(org_policies.router, prefix=prefix)
    app.include_router(org_signups.router, prefix=prefix)
    app.include_router(org_pages.router, prefix=prefix)
    app.include_router(federations.router, prefix=prefix)
    app.include_router(federation_pages.router, prefix=prefix)

    @app.get(f"{prefix}/oauth_callback", include_in_schema=False)
    async def oauth_callback(request: Request) -> Response:
        return await request.app.state.auth.finish_login(request)

    # pages (/, /book, /jobs, /reports, /admin), templates and restart APIs, CSRF check
    install_pages(app, prefix)

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
    # outermost of all: /endpoints/ requests go straight to the model gateway
    app.add_middleware(EndpointRoutes, prefix=app.state.endpoints_prefix)

    return app


def main() -> None:
    import uvicorn

    env = read_env()
    url = urlparse(env.url)
    # werkhub's own events (bookings ended, servers stopped, jobs run) reach the hub's log
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname).1s %(asctime)s %(name)s] %(message)s"
    )
    for chatty in ("httpx", "httpcore"):  # a line per request to the hub: not an event
        logging.getLogger(chatty).setLevel(logging.WARNING)
    app = create_app(env=env)
    app.state.own_process = True  # the heap is settled once started (settle_heap)
    uvicorn.run(
        app,
        host=url.hostname or "127.0.0.1",
        port=url.port or 10101,
        log_level="info",
        # one access-log line per request costs CPU under load; the hub logs requests
        access_log=env.access_log,
        proxy_headers=False,
        timeout_keep_alive=SERVER_KEEP_ALIVE,
    )


if __name__ == "__main__":
    main()
