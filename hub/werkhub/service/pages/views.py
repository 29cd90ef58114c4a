"""Hub pages of the werkhub service: home, booking calendar, jobs, reports, admin (the
model endpoints page is ``endpoint_views.py``).

Server-rendered with Jinja2 from the service's own JSON API (called in-process with the
caller's token, so pages show exactly what the API allows that person to see). State
changes go through the API from small static JS with the CSRF header (see ``csrf.py``).
"""

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from werkhub import http
from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.errors import Relayed
from werkhub.service.identity import CurrentUser
from werkhub.service.pages.csrf import token_for
from werkhub.service.pages.grid import week_grid, week_start
from werkhub.service.pages.svg import bar_chart, heat_colour

HERE = Path(__file__).parent
ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals["heat_colour"] = heat_colour


class ApiError(Relayed):
    """An error answer of the service's own API, passed on to the page."""


class Api:
    """The service's own API, called in-process with the caller's hub token."""

    def __init__(self, request: Request) -> None:
        prefix = request.app.state.env.prefix
        auth = request.app.state.auth
        token = auth.token_from_header(request) or request.cookies.get(auth.cookie_name, "")
        self.client = http.async_client(
            "http://werkhub.internal",
            token=token,
            transport=httpx.ASGITransport(app=request.app),
        )
        self.api = f"{prefix}/api"

    async def get(self, path: str, **params: Any) -> Any:
        reply = await self.client.get(f"{self.api}{path}", params=params or None)
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text
            raise ApiError(reply.status_code, str(detail))
        return reply.json()

    async def maybe(self, path: str, **params: Any) -> tuple[Any, str | None]:
        """(answer, None) or (None, a message for the page)."""
        try:
            return await self.get(path, **params), None
        except ApiError as exc:
            if exc.status == 404 and "No such werkhub endpoint" in exc.detail:
                return None, "This part of werkhub is not installed on this hub yet."
            return None, exc.detail

    async def aclose(self) -> None:
        await self.client.aclose()


def local(value: Any, tz: ZoneInfo, fmt: str = "%a %d %b %H:%M") -> str:
    if not value:
        return ""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt.astimezone(tz).strftime(fmt)


def tz(request: Request) -> ZoneInfo:
    return request.app.state.bookings.settings.tz


def render(request: Request, user: HubUser, name: str, status: int = 200, **ctx: Any):
    zone = tz(request)
    prefix = request.app.state.env.prefix
    html = ENV.get_template(name).render(
        user=user,
        prefix=prefix,
        api=f"{prefix}/api",
        hub=request.app.state.env.hub_base_url,
        csrf=token_for(request),
        tz=zone.key,
        local=lambda v, fmt="%a %d %b %H:%M": local(v, zone, fmt),
        page=name.removesuffix(".html"),
        **ctx,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


async def notices(api: Api, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    found, _ = await api.maybe("/notifications", unread="true")
    return [n for n in found or [] if not kinds or n["kind"] in kinds][:10]


router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, user: CurrentUser) -> HTMLResponse:
    api = Api(request)
    try:
        latest = await notices(api)
    finally:
        await api.aclose()
    # the organisation this person administers (its page is linked), if any
    found = await asyncio.to_thread(request.app.state.orgs.membership, user.name)
    org_admin = found.slug if found and found.admin and user.kind == "user" else None
    org = found.slug if found and user.kind == "user" else None  # federations are linked
    return render(request, user, "home.html", notices=latest, org_admin=org_admin, org=org)


@router.get("/book", response_class=HTMLResponse)
async def book(request: Request, user: CurrentUser) -> HTMLResponse:
    api = Api(request)
    zone = tz(request)
    now = ledger.utcnow()
    try:
        gpus = await api.get("/gpus")
        first = week_start(now, zone)
        grids = []
        for t in gpus["types"]:
            steps = await api.get(
                "/availability",
                gpu_type=t["gpu_type"],
                start=first.isoformat(),
                end=(first + timedelta(days=7)).isoformat(),
                step=60,
            )
            grids.append({"type": t, "rows": week_grid(steps["steps"], zone, now)})
        bookings = await api.get("/bookings", limit=200, user=user.name)
        waitlist, _ = await api.maybe("/waitlist", user=user.name)
        quota, _ = await api.maybe("/quota")
    finally:
        await api.aclose()
    upcoming = sorted(
        (b for b in bookings if b["state"] in ("booked", "active")), key=lambda b: b["start"]
    )
    for b in upcoming:
        b["future"] = datetime.fromisoformat(b["start"]) > now
    past = [b for b in bookings if b["state"] not in ("booked", "active")][:20]
    default_start = (now.astimezone(zone) + timedelta(hours=1)).replace(
        minute=0, second=0, microsecond=0
    )
    return render(
        request,
        user,
        "book.html",
        gpus=gpus,
        grids=grids,
        upcoming=upcoming,
        past=past,
        waitlist=[w for w in waitlist or [] if w["state"] == "waiting"],
        quota=quota,
        default_start=default_start.strftime("%Y-%m-%dT%H:%M"),
        now=now,
    )


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(request: Request, user: CurrentUser) -> HTMLResponse:
    api = Api(request)
    try:
        found, problem = await api.maybe("/jobs")
        latest = await notices(api, ("job_failed", "job_succeeded"))
        runs: dict[Any, list[dict[str, Any]]] = {}
        for job in found or []:
            answer, _ = await api.maybe(f"/jobs/{job['id']}/runs")
            runs[job["id"]] = (answer or [])[:10]
    finally:
        await api.aclose()
    return render(
        request, user, "jobs.html", jobs=found or [], runs=runs, problem=problem, notices=latest
    )


@router.get("/reports", response_class=HTMLResponse)
async def reports(request: Request, user: CurrentUser) -> HTMLResponse:
    api = Api(request)
    try:
        found, problem = await api.maybe("/reports")
    finally:
        await api.aclose()
    return render(request, user, "reports.html", reports=found or [], problem=problem)


@router.get("/admin", response_class=HTMLResponse)
async def admin(
    request: Request,
    user: CurrentUser,
    days: Annotated[int, Query(ge=1, le=366, description="period in days")] = 30,
) -> HTMLResponse:
    if not user.admin:
        return render(request, user, "forbidden.html", status=403)
    api = Api(request)
    end = ledger.utcnow()
    start = end - timedelta(days=days)
    try:
        usage = await api.get("/usage", start=start.isoformat(), end=end.isoformat())
        policies, _ = await api.maybe("/policies")
        bookings = await api.get("/bookings", limit=500)
        slurm, slurm_problem = (None, None)
        if request.app.state.config.slurm.enabled:
            slurm, slurm_problem = await api.maybe("/slurm/status")
    finally:
        await api.aclose()
    series = ["booked", "used", "released"]
    return render(
        request,
        user,
        "admin.html",
        days=days,
        usage=usage,
        policies=policies,
        bookings=bookings,
        slurm=slurm,
        slurm_problem=slurm_problem,
        user_chart=bar_chart(usage["users"], series, f"GPU-hours per user, last {days} days"),
        group_chart=bar_chart(usage["groups"], series, f"GPU-hours per group, last {days} days"),
    )
