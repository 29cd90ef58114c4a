"""Organisations' statements: ``GET /api/orgs/{slug}/statement?month=YYYY-MM`` (JSON or
``format=csv``) and the printable page ``/orgs/{slug}/statement`` with plots, for the
organisation's admins and platform admins (members 403, anyone else 404)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.errors import Invalid
from werkhub.orgs import statement as rules
from werkhub.orgs.rules import Actor
from werkhub.orgs.sums import statement_rows
from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import SlugPath, actor_of, store_of
from werkhub.service.pages.svg import bar_chart
from werkhub.service.pages.views import render

router = APIRouter(tags=["organisations"])
Month = Annotated[
    str | None,
    Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM (default: this month)"),
]


async def build(request: Request, user: HubUser, slug: str, month: str | None) -> dict[str, Any]:
    actor: Actor = await actor_of(request, user)
    org = await asyncio.to_thread(store_of(request).get, actor, slug)
    if not actor.manages(slug):
        raise HTTPException(403, f"Only admins of '{slug}' see its statement.")
    manager = request.app.state.bookings
    tz = manager.settings.tz
    month = month or ledger.utcnow().astimezone(tz).strftime("%Y-%m")
    try:
        start, end = rules.month_bounds(month, tz)
    except ValueError as exc:
        raise Invalid(str(exc), field="month") from None
    members = await asyncio.to_thread(store_of(request).org_members_of, slug)
    booked, segments, runs = await asyncio.to_thread(
        statement_rows, manager.reader, members, start, end
    )
    cfg = request.app.state.config.orgs
    figures = rules.compute(
        booked,
        segments,
        runs,
        members,
        start.timestamp(),
        end.timestamp(),
        ledger.now_ts(),
        cfg.prices_per_gpu_hour,
    )
    return {
        "org": {"slug": org["slug"], "name": org["name"]},
        "month": month,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "currency": cfg.currency,
        "prices_per_gpu_hour": dict(cfg.prices_per_gpu_hour),
        **figures,
    }


@router.get(
    "/api/orgs/{slug}/statement",
    summary="An organisation's monthly statement (JSON, or CSV with format=csv)",
)
async def statement(
    slug: SlugPath,
    request: Request,
    user: CurrentUser,
    month: Month = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    found = await build(request, user, slug, month)
    if format == "json":
        return found
    out = io.StringIO()
    csv.writer(out).writerows(rules.csv_rows(found))
    name = f"werkhub-{slug}-{found['month']}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/orgs/{slug}/statement", include_in_schema=False)
async def page(
    slug: SlugPath, request: Request, user: CurrentUser, month: Month = None
) -> HTMLResponse:
    found = await build(request, user, slug, month)
    chart = bar_chart(
        found["members"], list(rules.FIELDS), f"GPU-hours per member, {found['month']}"
    )
    types_chart = bar_chart(
        found["gpu_types"], list(rules.FIELDS), f"GPU-hours per GPU type, {found['month']}"
    )
    split_chart = bar_chart(
        found["members"],
        list(rules.SPLIT),
        f"Booked GPU-hours per member, guaranteed and borrowed, {found['month']}",
    )
    return render(
        request,
        user,
        "statement.html",
        s=found,
        member_chart=chart,
        type_chart=types_chart,
        split_chart=split_chart,
        printed=datetime.now().astimezone(request.app.state.bookings.settings.tz),
    )
