"""HTTP API of organisations under /services/werkhub/api/orgs.

Platform admins (hub admins, the command line) create, rename and remove organisations.
An organisation's admins manage its people: add and remove members, make admins, create
groups inside it and put members in them. Every organisation is mirrored by hub groups
(``org-<slug>`` members, ``org-<slug>-admins`` admins, ``<slug>-<name>`` groups made
inside), which this API keeps equal to the store. Anything of another organisation
answers 404, for organisation admins too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel

from werkhub.auth.hub import HubUser
from werkhub.config.wiring import CLI_SERVICE
from werkhub.errors import Conflict, Invalid, NotFound, Upstream
from werkhub.orgs import rules
from werkhub.orgs.rules import Actor
from werkhub.orgs.store import OrgStore
from werkhub.service.identity import CurrentUser

router = APIRouter(prefix="/api", tags=["organisations"])
SlugPath = Annotated[str, PathParam(min_length=2, max_length=20, pattern=rules.SLUG_PATTERN)]
UserPath = Annotated[str, PathParam(min_length=1, max_length=64)]
GroupPath = Annotated[str, PathParam(min_length=2, max_length=32, pattern=rules.GROUP_PATTERN)]


class OrgOut(BaseModel):
    slug: str
    name: str
    members: int
    budget_gpu_hours: float | None = None
    budget_period: str = "month"


def org_out(row: dict[str, Any], members: int | None = None) -> OrgOut:
    return OrgOut(
        slug=row["slug"],
        name=row["name"],
        members=row.get("members", 0) if members is None else members,
        budget_gpu_hours=row.get("budget_gpu_hours"),
        budget_period=row.get("budget_period") or "month",
    )


class MemberOut(BaseModel):
    user: str
    admin: bool


def store_of(request: Request) -> OrgStore:
    return request.app.state.orgs


async def actor_of(request: Request, user: HubUser) -> Actor:
    platform = user.admin or (user.kind == "service" and user.name == CLI_SERVICE)
    if user.kind != "user":
        return Actor(name=f"service:{user.name}", platform_admin=platform)
    return await asyncio.to_thread(store_of(request).actor, user.name, platform)


def platform_only(actor: Actor) -> None:
    if not actor.platform_admin:
        raise HTTPException(403, "Only platform administrators create or change organisations.")


async def managed(request: Request, user: HubUser, slug: str) -> tuple[Actor, dict[str, Any]]:
    actor = await actor_of(request, user)
    org = await asyncio.to_thread(store_of(request).get, actor, slug)
    if not actor.manages(slug):
        raise HTTPException(403, f"Only admins of '{slug}' manage its people.")
    return actor, org


async def not_of_another(request: Request, actor: Actor, name: str) -> None:
    """To an organisation's admin, someone of another organisation does not exist (404);
    platform admins learn the reason (409 from the store)."""
    if actor.platform_admin:
        return
    found = await asyncio.to_thread(store_of(request).membership, name)
    if found is not None and found.slug != actor.org:
        raise NotFound(f"No hub user '{name}'.", field="user")


def write_slugs(request: Request) -> None:
    """Keep ``orgs.json`` (every organisation's slug) for the hub's organisation admin roles,
    which JupyterHub takes from its configuration at start: a new organisation's admins
    get their hub rights at the hub's next start; werkhub's own API applies them at once."""
    slugs = [r["slug"] for r in store_of(request).listing(Actor(name="", platform_admin=True))]
    path = request.app.state.env.state.orgs_file
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(json.dumps(slugs))
    partial.replace(path)


def refresh_policies(request: Request) -> None:
    """The booking rules forget the policies of a removed member or organisation."""
    policies = getattr(request.app.state, "org_policies", None)
    if policies is not None:
        policies.refresh()


# the hub's groups ----------------------------------------------------------------------
async def hub(request: Request, method: str, path: str, body: Any = None, ok=(200, 201)) -> Any:
    reply = await request.app.state.auth.hub_request(method, path, body)
    if reply.status_code not in ok:
        raise Upstream(f"the hub refused {method} {path}: {reply.status_code} {reply.text[:200]}")
    return reply


async def ensure_group(request: Request, group: str) -> None:
    await hub(request, "POST", f"/groups/{quote(group, safe='')}", ok=(201, 409))


async def drop_group(request: Request, group: str) -> None:
    await hub(request, "DELETE", f"/groups/{quote(group, safe='')}", ok=(204, 404))


async def set_in_group(request: Request, group: str, user: str, member: bool) -> None:
    method = "POST" if member else "DELETE"
    await hub(
        request, method, f"/groups/{quote(group, safe='')}/users", {"users": [user]}, ok=(200, 404)
    )
    request.app.state.auth.forget(user)


# organisations -------------------------------------------------------------------------
@router.get("/orgs", response_model=list[OrgOut], summary="Organisations you may see")
async def listing(request: Request, user: CurrentUser) -> list[OrgOut]:
    actor = await actor_of(request, user)
    rows = await asyncio.to_thread(store_of(request).listing, actor)
    return [org_out(r) for r in rows]


@router.post("/orgs", status_code=201, response_model=OrgOut, summary="Create an organisation")
async def create(body: rules.OrgCreate, request: Request, user: CurrentUser) -> OrgOut:
    actor = await actor_of(request, user)
    platform_only(actor)
    if body.slug in {r["slug"] for r in await asyncio.to_thread(store_of(request).listing, actor)}:
        raise Conflict(f"organisation '{body.slug}' exists already", field="slug")
    groups = [rules.members_group(body.slug), rules.admins_group(body.slug)]
    for group in groups:  # the hub first: a refusal there leaves nothing in the store
        await ensure_group(request, group)
    row = await asyncio.to_thread(store_of(request).create, body.slug, body.name, groups)
    await asyncio.to_thread(write_slugs, request)
    return org_out(row, members=0)


@router.get("/orgs/{slug}", response_model=OrgOut, summary="One organisation")
async def one(slug: SlugPath, request: Request, user: CurrentUser) -> OrgOut:
    actor = await actor_of(request, user)
    row = await asyncio.to_thread(store_of(request).get, actor, slug)
    return org_out(row)


@router.patch(
    "/orgs/{slug}",
    response_model=OrgOut,
    summary="Rename an organisation, or set its GPU-hour budget per month or week",
)
async def rename(
    slug: SlugPath, body: rules.OrgRename, request: Request, user: CurrentUser
) -> OrgOut:
    actor = await actor_of(request, user)
    platform_only(actor)
    values = body.model_dump(exclude_unset=True)
    if values.get("name", "") is None or values.get("budget_period", "") is None:
        raise Invalid("name and budget_period cannot be null", field="name")
    if not values:
        raise Invalid("nothing to change: give name, budget_gpu_hours or budget_period")
    await asyncio.to_thread(store_of(request).change, slug, values)
    return await one(slug, request, user)


@router.delete("/orgs/{slug}", status_code=204, summary="Remove an organisation")
async def remove(slug: SlugPath, request: Request, user: CurrentUser) -> Response:
    platform_only(await actor_of(request, user))
    members, groups = await asyncio.to_thread(store_of(request).remove, slug)
    await asyncio.to_thread(write_slugs, request)
    await asyncio.to_thread(refresh_policies, request)
    for group in groups:
        await drop_group(request, group)
    for member in members:
        request.app.state.auth.forget(member)
    return Response(status_code=204)


@router.get(
    "/orgs/{slug}/guarantees",
    response_model=dict[str, int],
    summary="GPUs per type that are the organisation's whenever it asks",
)
async def guarantees(slug: SlugPath, request: Request, user: CurrentUser) -> dict[str, int]:
    actor = await actor_of(request, user)
    await asyncio.to_thread(store_of(request).get, actor, slug)
    return await asyncio.to_thread(store_of(request).guarantees, slug)


@router.put(
    "/orgs/{slug}/guarantees",
    response_model=dict[str, int],
    summary="Set the organisation's guaranteed GPUs per type (platform admins)",
)
async def set_guarantees(
    slug: SlugPath,
    body: Annotated[dict[str, int], Body(description="GPU type -> guaranteed GPUs")],
    request: Request,
    user: CurrentUser,
) -> dict[str, int]:
    platform_only(await actor_of(request, user))
    manager = request.app.state.bookings
    for gpu_type, count in body.items():
        if count < 0:
            raise Invalid(f"{gpu_type}: a guarantee is a number of GPUs, 0 or more", gpu_type)
        if count:  # a known type; how many: all organisations' together (set_guarantees)
            manager.check_type(gpu_type, 1)
    sizes = {t: pool.size for t, pool in manager.settings.pools.items()}
    await asyncio.to_thread(store_of(request).set_guarantees, slug, body, sizes)
    return await asyncio.to_thread(store_of(request).guarantees, slug)


# people --------------------------------------------------------------------------------
@router.get("/orgs/{slug}/members", response_model=list[MemberOut], summary="Its members")
async def members(slug: SlugPath, request: Request, user: CurrentUser) -> list[MemberOut]:
    actor, _ = await managed(request, user, slug)
    rows = await asyncio.to_thread(store_of(request).members, actor, slug)
    return [MemberOut(user=r["user"], admin=r["admin"]) for r in rows]


@router.put(
    "/orgs/{slug}/members/{member}",
    response_model=MemberOut,
    summary="Add a user to the organisation, or make or unmake them an admin",
)
async def put_member(
    slug: SlugPath,
    member: UserPath,
    body: rules.MemberPut,
    request: Request,
    user: CurrentUser,
) -> MemberOut:
    actor, _ = await managed(request, user, slug)
    if await request.app.state.auth.user_details(member) is None:
        raise NotFound(f"No hub user '{member}'.", field="user")
    await not_of_another(request, actor, member)
    await asyncio.to_thread(store_of(request).put_member, slug, member, body.admin)
    await set_in_group(request, rules.members_group(slug), member, True)
    await set_in_group(request, rules.admins_group(slug), member, body.admin)
    return MemberOut(user=member, admin=body.admin)


@router.delete(
    "/orgs/{slug}/members/{member}", status_code=204, summary="Remove a member (and admin)"
)
async def drop_member(
    slug: SlugPath, member: UserPath, request: Request, user: CurrentUser
) -> Response:
    await managed(request, user, slug)
    store = store_of(request)
    groups = await asyncio.to_thread(store.groups, Actor(name="", platform_admin=True), slug)
    await asyncio.to_thread(store.drop_member, slug, member)
    await asyncio.to_thread(refresh_policies, request)
    for group in groups:
        await set_in_group(request, group, member, False)
    return Response(status_code=204)


# groups inside -------------------------------------------------------------------------
@router.get("/orgs/{slug}/groups", response_model=list[str], summary="Its hub groups")
async def groups(slug: SlugPath, request: Request, user: CurrentUser) -> list[str]:
    actor = await actor_of(request, user)
    return await asyncio.to_thread(store_of(request).groups, actor, slug)


@router.post(
    "/orgs/{slug}/groups",
    status_code=201,
    response_model=list[str],
    summary="Create a group inside the organisation (hub group <slug>-<name>)",
)
async def add_group(
    slug: SlugPath, body: rules.GroupCreate, request: Request, user: CurrentUser
) -> list[str]:
    actor, _ = await managed(request, user, slug)
    group = rules.inner_group(slug, body.name)
    if await request.app.state.auth.group_members(group) is not None:
        raise Invalid(f"a hub group '{group}' exists already outside werkhub's care", "name")
    await asyncio.to_thread(store_of(request).add_group, slug, group)
    await ensure_group(request, group)
    return await asyncio.to_thread(store_of(request).groups, actor, slug)


async def inner_group_and_member(
    request: Request, user: Any, slug: str, name: str, member: str
) -> str:
    """The hub group of the organisation's group ``name``, once the caller may manage the
    organisation and ``member`` belongs to it; 404 for another organisation's group or
    person."""
    actor, _ = await managed(request, user, slug)
    group = rules.inner_group(slug, name)
    if group not in await asyncio.to_thread(store_of(request).groups, actor, slug):
        raise NotFound(f"No group '{name}' in organisation '{slug}'.")
    found = await asyncio.to_thread(store_of(request).membership, member)
    if found is None or found.slug != slug:
        raise NotFound(f"{member} is not a member of '{slug}'.", field="user")
    return group


@router.put(
    "/orgs/{slug}/groups/{name}/members/{member}",
    status_code=204,
    summary="Put a member of the organisation into one of its groups",
)
async def group_member(
    slug: SlugPath, name: GroupPath, member: UserPath, request: Request, user: CurrentUser
) -> Response:
    group = await inner_group_and_member(request, user, slug, name, member)
    await set_in_group(request, group, member, True)
    return Response(status_code=204)


@router.delete(
    "/orgs/{slug}/groups/{name}/members/{member}",
    status_code=204,
    summary="Take a member of the organisation out of one of its groups",
)
async def drop_group_member(
    slug: SlugPath, name: GroupPath, member: UserPath, request: Request, user: CurrentUser
) -> Response:
    group = await inner_group_and_member(request, user, slug, name, member)
    await set_in_group(request, group, member, False)
    await asyncio.to_thread(refresh_policies, request)  # group policies no longer apply
    return Response(status_code=204)


# sharing stays inside an organisation --------------------------------------------------
async def check_share(request: Request, sharer: str, group: str) -> None:
    """Refuse (422) a share of ``sharer``'s object with a group of another organisation."""
    store: OrgStore | None = getattr(request.app.state, "orgs", None)
    if store is None:
        return
    mine = await asyncio.to_thread(store.membership, sharer)
    theirs = await asyncio.to_thread(store.group_org, group)
    refusal = rules.share_refusal(mine.slug if mine else None, group, theirs)
    if refusal is not None:
        raise Invalid(refusal, field="group")
