"""The model endpoints page (``/endpoints``) and the live part of each endpoint on it
(``/endpoints/<owner>/<name>/live``: state and plots, which the page's JS fetches again
every few seconds so the plots move while requests come in).

Like the other pages, it renders what the service's own API answers the caller (their own
endpoints, those shared with their groups; admins: all); changes (tokens, delete) go
through the API from ``werkhub.js`` with the CSRF header.
"""

from __future__ import annotations

import asyncio
import html
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from werkhub.auth.hub import HubUser
from werkhub.service.identity import CurrentUser
from werkhub.service.pages.svg import minute_chart
from werkhub.service.pages.views import Api, ApiError, render, tz

#: minutes the plots cover, the running one included
WINDOW = 60
#: how often the page fetches each endpoint's live part again (seconds)
REFRESH_SECONDS = 5

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Window:
    """Figures per minute over the last ``WINDOW`` minutes, oldest first, zeros (latency:
    None) for minutes without requests."""

    labels: list[str]
    requests: list[int]
    errors: list[int]
    p50: list[float | None]
    p99: list[float | None]

    @property
    def total(self) -> int:
        return sum(self.requests)

    @property
    def failed(self) -> int:
        return sum(self.errors)


def minute_window(
    found: list[dict[str, Any]], now: float, zone: ZoneInfo, minutes: int = WINDOW
) -> Window:
    """Shape the metrics API's answer (only minutes with requests) into a full window that
    ends with the running minute (``now``, seconds since the epoch)."""
    end = int(now // 60)
    keys = range(end - minutes + 1, end + 1)
    by_minute = {int(datetime.fromisoformat(str(f["minute"])).timestamp() // 60): f for f in found}
    rows = [by_minute.get(k) for k in keys]
    return Window(
        labels=[
            datetime.fromtimestamp(k * 60, UTC).astimezone(zone).strftime("%H:%M") for k in keys
        ],
        requests=[int(r["requests"]) if r else 0 for r in rows],
        errors=[int(r["errors"]) if r else 0 for r in rows],
        p50=[float(r["p50_ms"]) if r and r["requests"] else None for r in rows],
        p99=[float(r["p99_ms"]) if r and r["requests"] else None for r in rows],
    )


def charts(endpoint: dict[str, Any], win: Window) -> dict[str, str]:
    name = endpoint["name"]
    return {
        "requests": minute_chart(
            win.labels,
            {"requests": win.requests, "errors": win.errors},
            f"Requests per minute to {name}, last {WINDOW} minutes",
            "requests",
            bars=True,
        ),
        "latency": minute_chart(
            win.labels,
            {"p50": win.p50, "p99": win.p99},
            f"Latency of {name} per minute (ms), last {WINDOW} minutes",
            "ms",
        ),
    }


def manages(user: HubUser, endpoint: dict[str, Any]) -> bool:
    return user.admin or endpoint["owner"] == user.name


async def live_part(api: Api, request: Request, endpoint: dict[str, Any]) -> dict[str, Any]:
    """What the live part of one endpoint shows: the endpoint, its window and charts."""
    found, _ = await api.maybe(
        f"/endpoints/{endpoint['name']}/metrics", owner=endpoint["owner"], minutes=WINDOW
    )
    win = minute_window(found or [], time.time(), tz(request))
    return {"e": endpoint, "win": win, "charts": charts(endpoint, win)}


async def token_list(api: Api, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    found, _ = await api.maybe(f"/endpoints/{endpoint['name']}/tokens", owner=endpoint["owner"])
    return found or []


@router.get("/endpoints", response_class=HTMLResponse)
async def endpoints_page(request: Request, user: CurrentUser) -> HTMLResponse:
    api = Api(request)
    try:
        found, problem = await api.maybe("/endpoints")
        found = found or []
        lives = await asyncio.gather(*(live_part(api, request, e) for e in found))
        tokens = await asyncio.gather(
            *(token_list(api, e) if manages(user, e) else _none() for e in found)
        )
    finally:
        await api.aclose()
    items = [
        {**live, "manages": manages(user, live["e"]), "tokens": t}
        for live, t in zip(lives, tokens, strict=True)
    ]
    return render(
        request,
        user,
        "endpoints.html",
        items=items,
        problem=problem,
        window=WINDOW,
        refresh_seconds=REFRESH_SECONDS,
    )


async def _none() -> list[dict[str, Any]]:
    return []


@router.get("/endpoints/{owner}/{name}/live", response_class=HTMLResponse)
async def endpoint_live(
    request: Request,
    user: CurrentUser,
    owner: Annotated[str, PathParam(min_length=1, max_length=64)],
    name: Annotated[str, PathParam(min_length=1, max_length=40)],
) -> HTMLResponse:
    api = Api(request)
    try:
        try:
            endpoint = await api.get(f"/endpoints/{name}", owner=owner)
        except ApiError as exc:
            return HTMLResponse(
                f"<p class='note'>{html.escape(exc.detail)}</p>",
                status_code=exc.status,
                headers={"Cache-Control": "no-store"},
            )
        live = await live_part(api, request, endpoint)
    finally:
        await api.aclose()
    return render(request, user, "_endpoint_live.html", **live)
