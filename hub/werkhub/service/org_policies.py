"""Booking policies an organisation's admins set for its members and groups, within the
organisation's budget and the site's GPUs (``/api/orgs/{slug}/policies``). The booking
rules use them at once: the member's own, then their groups' (combined, most generous),
then the configured policies. Another organisation's people and groups answer 404."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel

from werkhub.booking.quota import Policy
from werkhub.errors import Invalid, NotFound
from werkhub.orgs import rules
from werkhub.orgs.policies import OrgPolicies
from werkhub.orgs.rules import Actor
from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import SlugPath, UserPath, managed, store_of

router = APIRouter(prefix="/api", tags=["organisations"])
#: a hub group of the organisation as ``GET /orgs/{slug}/groups`` lists it (e.g. acme-qa)
HubGroupPath = Annotated[str, PathParam(min_length=2, max_length=255)]


class PolicyOut(BaseModel):
    kind: Literal["user", "group"]
    name: str
    policy: Policy
    updated_by: str | None = None


def policies_of(request: Request) -> OrgPolicies:
    return request.app.state.org_policies


async def member_of(request: Request, user: Any, slug: str, name: str) -> dict[str, Any]:
    _, org = await managed(request, user, slug)
    found = await asyncio.to_thread(store_of(request).membership, name)
    if found is None or found.slug != slug:
        raise NotFound(f"{name} is not a member of '{slug}'.", field="user")
    return org


async def group_of(request: Request, user: Any, slug: str, group: str) -> dict[str, Any]:
    _, org = await managed(request, user, slug)
    every = Actor(name="", platform_admin=True)
    if group not in await asyncio.to_thread(store_of(request).groups, every, slug):
        raise NotFound(f"No group '{group}' in organisation '{slug}'.", field="group")
    return org


def check(request: Request, org: dict[str, Any], policy: Policy) -> None:
    """422 with the reason when ``policy`` leaves the organisation's budget or the site."""
    pools = request.app.state.bookings.settings.pools
    problem = rules.policy_problem(
        policy,
        org.get("budget_gpu_hours"),
        org.get("budget_period") or "month",
        {t: pool.size for t, pool in pools.items()},
    )
    if problem is not None:
        raise Invalid(problem[1], field=problem[0])


@router.get(
    "/orgs/{slug}/policies",
    response_model=list[PolicyOut],
    summary="Booking policies the organisation's admins set for members and groups",
)
async def listing(slug: SlugPath, request: Request, user: CurrentUser) -> list[PolicyOut]:
    await managed(request, user, slug)
    rows = await asyncio.to_thread(policies_of(request).listing, slug)
    return [PolicyOut(**r) for r in rows]


async def _put(
    request: Request, user: Any, slug: str, kind: Literal["user", "group"], name: str, body: Policy
) -> PolicyOut:
    org = await (member_of if kind == "user" else group_of)(request, user, slug, name)
    check(request, org, body)
    actor, _ = await managed(request, user, slug)
    await asyncio.to_thread(policies_of(request).put, slug, kind, name, body, actor.name)
    return PolicyOut(kind=kind, name=name, policy=body, updated_by=actor.name)


async def _get(
    request: Request, user: Any, slug: str, kind: Literal["user", "group"], name: str
) -> PolicyOut:
    await (member_of if kind == "user" else group_of)(request, user, slug, name)
    policy = await asyncio.to_thread(policies_of(request).get, slug, kind, name)
    return PolicyOut(kind=kind, name=name, policy=policy)


async def _drop(
    request: Request, user: Any, slug: str, kind: Literal["user", "group"], name: str
) -> Response:
    await (member_of if kind == "user" else group_of)(request, user, slug, name)
    await asyncio.to_thread(policies_of(request).drop, slug, kind, name)
    return Response(status_code=204)


@router.get(
    "/orgs/{slug}/policies/users/{member}",
    response_model=PolicyOut,
    summary="A member's booking policy set by the organisation",
)
async def get_user(
    slug: SlugPath, member: UserPath, request: Request, user: CurrentUser
) -> PolicyOut:
    return await _get(request, user, slug, "user", member)


@router.put(
    "/orgs/{slug}/policies/users/{member}",
    response_model=PolicyOut,
    summary="Set a member's booking policy (within the organisation's budget)",
)
async def put_user(
    slug: SlugPath, member: UserPath, body: Policy, request: Request, user: CurrentUser
) -> PolicyOut:
    return await _put(request, user, slug, "user", member, body)


@router.delete(
    "/orgs/{slug}/policies/users/{member}",
    status_code=204,
    summary="Drop a member's policy (their groups' or the configured one applies)",
)
async def drop_user(
    slug: SlugPath, member: UserPath, request: Request, user: CurrentUser
) -> Response:
    return await _drop(request, user, slug, "user", member)


@router.get(
    "/orgs/{slug}/policies/groups/{group}",
    response_model=PolicyOut,
    summary="A group's booking policy set by the organisation",
)
async def get_group(
    slug: SlugPath, group: HubGroupPath, request: Request, user: CurrentUser
) -> PolicyOut:
    return await _get(request, user, slug, "group", group)


@router.put(
    "/orgs/{slug}/policies/groups/{group}",
    response_model=PolicyOut,
    summary="Set a group's booking policy (within the organisation's budget)",
)
async def put_group(
    slug: SlugPath, group: HubGroupPath, body: Policy, request: Request, user: CurrentUser
) -> PolicyOut:
    return await _put(request, user, slug, "group", group, body)


@router.delete(
    "/orgs/{slug}/policies/groups/{group}",
    status_code=204,
    summary="Drop a group's policy",
)
async def drop_group(
    slug: SlugPath, group: HubGroupPath, request: Request, user: CurrentUser
) -> Response:
    return await _drop(request, user, slug, "group", group)
