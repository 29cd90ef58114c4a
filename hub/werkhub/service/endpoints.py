"""HTTP API of model endpoints under /services/werkhub/api/endpoints.

An endpoint belongs to its creator; ``?owner=`` reaches one shared with the caller (or,
for admins, anyone's). Creating one checks everything before anything is kept: the name,
that the caller may read the registered model and that the alias or version exists, the
GPU type and the owner's quota (the GPUs are booked at once), the groups; a refusal
answers 4xx and leaves nothing behind. Others' endpoints answer 404.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from werkhub.auth.hub import HubUser
from werkhub.errors import Invalid, NotFound
from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import check_share
from werkhub.serving import spec as rules
from werkhub.serving.models import input_example
from werkhub.serving.store import Viewer

router = APIRouter(prefix="/api", tags=["endpoints"])

NamePath = Annotated[
    str, PathParam(min_length=1, max_length=rules.MAX_NAME, pattern=rules.NAME_PATTERN)
]
OwnerQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="the endpoint's owner (default: you)"),
]


class EndpointOut(BaseModel):
    owner: str
    name: str
    model: str
    alias: str | None
    version: str | None = Field(description="the pinned version (null: follows the alias)")
    serving_version: str | None = Field(description="the version that answers now")
    state: str = Field(description="starting, ready, scaled_to_zero or failed")
    reason: str = Field(description="why it failed, or what the last rollout said")
    log_tail: str = Field(description="the server's last log lines after a failure (owner)")
    resources: rules.Resources
    min_replicas: int
    idle_minutes: int
    groups: list[str]
    request_logging: bool
    url: str = Field(description="POST here with a hub token or an endpoint token")
    created: datetime
    updated: datetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=200, description="what uses it, e.g. line-3 PC")
    expires_in_days: int | None = Field(
        default=90, ge=1, le=3650, description="days until it expires (null: never)"
    )


class TokenOut(BaseModel):
    id: int
    note: str
    created: datetime
    expires: datetime | None
    revoked: datetime | None
    last_used: datetime | None


class NewToken(TokenOut):
    token: str = Field(description="shown once: werkhub keeps only its SHA-256")


class MinuteOut(BaseModel):
    minute: datetime
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    version: str | None


class LogOut(BaseModel):
    at: datetime
    caller: str
    status: int
    latency_ms: float
    version: str | None
    request: str
    response: str


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def viewer(user: HubUser) -> Viewer:
    if user.kind != "user":
        raise HTTPException(403, "Only hub users own and call model endpoints.")
    return Viewer(name=user.name, admin=user.admin, groups=tuple(user.groups))


def serving(request: Request) -> Any:
    found = getattr(request.app.state, "serving", None)
    if found is None:
        raise HTTPException(503, "Model serving is off here (serving.enabled: false).")
    return found


def out(request: Request, row: dict[str, Any], who: Viewer) -> EndpointOut:
    settings = rules.Settings.model_validate(row["settings"])
    base = request.app.state.endpoints_prefix
    return EndpointOut(
        owner=row["owner"],
        name=row["name"],
        model=row["model"],
        alias=row["alias"],
        version=row["version"],
        serving_version=row["serving_version"],
        state=row["state"],
        reason=row["reason"],
        log_tail=row["log_tail"] if who.manages(row) else "",
        resources=settings.resources,
        min_replicas=settings.min_replicas,
        idle_minutes=settings.idle_minutes,
        groups=list(row["groups"]),
        request_logging=settings.request_logging,
        url=f"{base}{row['owner']}/{row['name']}/invocations",
        created=_ts(row["created"]),  # type: ignore[arg-type]
        updated=_ts(row["updated"]),  # type: ignore[arg-type]
    )


async def check_groups(request: Request, groups: list[str], owner: str) -> None:
    for group in groups:
        await check_share(request, owner, group)
        if await request.app.state.auth.group_members(group) is None:
            raise Invalid(f"groups: there is no hub group named '{group}'", field="groups")


def check_gpu(request: Request, resources: rules.Resources) -> None:
    if resources.gpu is not None:
        request.app.state.bookings.check_type(resources.gpu.type, resources.gpu.count)


@router.post(
    "/endpoints",
    status_code=201,
    response_model=EndpointOut,
    summary="Serve a registered model version as an endpoint you own",
)
async def create(body: rules.EndpointCreate, request: Request, user: CurrentUser) -> EndpointOut:
    svc = serving(request)
    who = viewer(user)
    await check_groups(request, body.groups, user.name)
    check_gpu(request, body.resources)
    model = await svc.models.resolve(who, body.model, body.alias, body.version)
    await svc.models.fetch(model)
    booking = None
    if body.resources.gpu is not None:
        booking = await svc.supervisor.book_for(user.name, body.resources.gpu.model_dump())
    settings = rules.Settings(
        resources=body.resources,
        min_replicas=body.min_replicas,
        idle_minutes=body.idle_minutes,
        request_logging=body.request_logging,
    )
    row = {
        "owner": user.name,
        "name": body.name,
        "model": body.model,
        "alias": body.alias,
        "version": body.version,
        "serving_version": None,
        "settings": settings.model_dump(),
        "groups": sorted(set(body.groups)),
        "state": "starting",
    }
    try:
        row = await asyncio.to_thread(
            svc.store.create, row, request.app.state.config.serving.max_endpoints_per_user
        )
    except Exception:
        if booking is not None:
            await svc.supervisor.release_booking(user.name, booking["id"])
        raise
    await svc.supervisor.created(row, booking)
    return out(request, row, who)


@router.get("/endpoints", response_model=list[EndpointOut], summary="Endpoints you may call")
async def listing(request: Request, user: CurrentUser) -> list[EndpointOut]:
    svc = serving(request)
    who = viewer(user)
    rows = await asyncio.to_thread(svc.store.listing, who)
    return [out(request, r, who) for r in rows]


@router.get("/endpoints/{name}", response_model=EndpointOut, summary="One endpoint")
async def one(
    name: NamePath, request: Request, user: CurrentUser, owner: OwnerQuery = None
) -> EndpointOut:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.visible, who, owner or user.name, name)
    return out(request, row, who)


@router.patch(
    "/endpoints/{name}",
    response_model=EndpointOut,
    summary="Change an endpoint; a new alias, version or model rolls out without downtime",
)
async def change(
    name: NamePath,
    body: rules.EndpointPatch,
    request: Request,
    user: CurrentUser,
    owner: OwnerQuery = None,
) -> EndpointOut:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.managed, who, owner or user.name, name)
    new, moved = rules.patched(row, body)
    if body.groups is not None:
        await check_groups(request, body.groups, row["owner"])
    if body.resources is not None:
        check_gpu(request, body.resources)
    if moved:  # the new target must exist and be readable before anything changes
        model = await svc.models.resolve(
            Viewer(name=row["owner"], admin=who.admin), new["model"], new["alias"], new["version"]
        )
        await svc.models.fetch(model)
    values = {k: new[k] for k in ("model", "alias", "version", "settings", "groups")}
    await asyncio.to_thread(svc.store.update, row["id"], **values)
    row = {**row, **values}
    await svc.supervisor.changed(row, moved)
    return out(request, row, who)


@router.delete("/endpoints/{name}", status_code=204, summary="Stop and delete an endpoint")
async def remove(
    name: NamePath, request: Request, user: CurrentUser, owner: OwnerQuery = None
) -> Response:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.managed, who, owner or user.name, name)
    await svc.supervisor.deleted(row["id"])
    await asyncio.to_thread(svc.store.remove, row["id"])
    return Response(status_code=204)


@router.post(
    "/endpoints/{name}/tokens",
    status_code=201,
    response_model=NewToken,
    summary="A token that may call this endpoint and nothing else (shown once)",
)
async def add_token(
    name: NamePath,
    body: TokenCreate,
    request: Request,
    user: CurrentUser,
    owner: OwnerQuery = None,
) -> NewToken:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.managed, who, owner or user.name, name)
    expires = None if body.expires_in_days is None else time.time() + body.expires_in_days * 86400
    token_row, token = await asyncio.to_thread(svc.store.add_token, row["id"], body.note, expires)
    return NewToken(**token_out(token_row).model_dump(), token=token)


def token_out(row: dict[str, Any]) -> TokenOut:
    return TokenOut(
        id=row["id"],
        note=row["note"],
        created=_ts(row["created"]),  # type: ignore[arg-type]
        expires=_ts(row["expires"]),
        revoked=_ts(row["revoked"]),
        last_used=_ts(row["last_used"]),
    )


@router.get(
    "/endpoints/{name}/tokens", response_model=list[TokenOut], summary="The endpoint's tokens"
)
async def tokens(
    name: NamePath, request: Request, user: CurrentUser, owner: OwnerQuery = None
) -> list[TokenOut]:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.managed, who, owner or user.name, name)
    return [token_out(t) for t in await asyncio.to_thread(svc.store.tokens, row["id"])]


@router.delete(
    "/endpoints/{name}/tokens/{token_id}",
    response_model=TokenOut,
    summary="Revoke an endpoint token (at once)",
)
async def revoke(
    name: NamePath,
    token_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)],
    request: Request,
    user: CurrentUser,
    owner: OwnerQuery = None,
) -> TokenOut:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.managed, who, owner or user.name, name)
    revoked = await asyncio.to_thread(svc.store.revoke, row["id"], token_id)
    svc.gateway.forget_token(token_id)
    return token_out(revoked)


@router.get(
    "/endpoints/{name}/metrics",
    response_model=list[MinuteOut],
    summary="Requests, errors and p50/p99 latency per minute",
)
async def metrics(
    name: NamePath,
    request: Request,
    user: CurrentUser,
    owner: OwnerQuery = None,
    minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 60,
) -> list[MinuteOut]:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.visible, who, owner or user.name, name)
    since = int(time.time() // 60) - minutes
    found = await asyncio.to_thread(svc.store.minutes, row["id"], since)
    live = svc.supervisor.live.get(row["id"])
    current = svc.supervisor.current_figures(live) if live else None
    if current and all(f["minute"] != current["minute"] for f in found):
        found.append(current)
    return [MinuteOut(**{**f, "minute": _ts(f["minute"] * 60)}) for f in found]


@router.get(
    "/endpoints/{name}/logs",
    response_model=list[LogOut],
    summary="The last 100 request/response pairs (request logging on; owner or admin)",
)
async def logs(
    name: NamePath, request: Request, user: CurrentUser, owner: OwnerQuery = None
) -> list[LogOut]:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.managed, who, owner or user.name, name)
    live = svc.supervisor.live.get(row["id"])
    if live is not None:
        await svc.supervisor.flush(live)
    found = await asyncio.to_thread(svc.store.logs, row["id"])
    return [LogOut(**{**f, "at": _ts(f["at"])}) for f in found]


@router.get(
    "/endpoints/{name}/example",
    summary="The registered input example of the version served (a request body to try)",
)
async def example(
    name: NamePath, request: Request, user: CurrentUser, owner: OwnerQuery = None
) -> Response:
    svc, who = serving(request), viewer(user)
    row = await asyncio.to_thread(svc.store.visible, who, owner or user.name, name)
    version = row["serving_version"] or row["version"]
    if version is None:
        raise NotFound("The endpoint serves no version yet; wait until it is ready.")
    body = await asyncio.to_thread(input_example, svc.models.path(row["model"], version))
    if body is None:
        raise NotFound(f"Version {version} of '{row['model']}' has no registered input example.")
    return Response(body, media_type="application/json")
