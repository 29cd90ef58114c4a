"""Sign-ups that ask to join an organisation (native login): its admins, and platform
admins, see them and approve (the person becomes a member and may log in) or refuse them
(the request is removed). Another organisation's requests answer 404."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from werkhub.auth.userstore import UserStore
from werkhub.errors import Invalid, NotFound
from werkhub.orgs.rules import members_group
from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import SlugPath, UserPath, hub, managed, set_in_group, store_of

router = APIRouter(prefix="/api", tags=["organisations"])


class SignupOut(BaseModel):
    name: str
    org: str


def users_of(request: Request) -> UserStore:
    cfg = request.app.state.config
    if cfg.auth.kind != "native":
        raise Invalid("with single sign-on people log in there; there are no sign-ups here")
    return UserStore(request.app.state.env.state.users_db, cfg.auth.native.min_password_length)


async def pending(request: Request, user: Any, slug: str, name: str | None = None) -> UserStore:
    await managed(request, user, slug)
    store = users_of(request)
    if name is not None:
        waiting = await asyncio.to_thread(store.org_signups, slug)
        if name not in waiting:
            raise NotFound(f"No pending sign-up of '{name}' for '{slug}'.", field="name")
    return store


@router.get(
    "/orgs/{slug}/signups",
    response_model=list[SignupOut],
    summary="Sign-ups waiting to join the organisation (organisation admins)",
)
async def signups(slug: SlugPath, request: Request, user: CurrentUser) -> list[SignupOut]:
    store = await pending(request, user, slug)
    waiting = await asyncio.to_thread(store.org_signups, slug)
    return [SignupOut(name=n, org=o) for n, o in waiting.items()]


@router.post(
    "/orgs/{slug}/signups/{name}/approve",
    response_model=SignupOut,
    summary="Approve a sign-up: the person joins the organisation and may log in",
)
async def approve(slug: SlugPath, name: UserPath, request: Request, user: CurrentUser) -> SignupOut:
    store = await pending(request, user, slug, name)
    # the hub account and the membership first: if either is refused, the person stays
    # unapproved (they cannot log in) and the request stays for another try
    await hub(request, "POST", f"/users/{quote(name, safe='')}", ok=(201, 409))
    await asyncio.to_thread(store_of(request).put_member, slug, name, False)
    await set_in_group(request, members_group(slug), name, True)
    await asyncio.to_thread(store.settle_signup, name, slug, True)
    return SignupOut(name=name, org=slug)


@router.post(
    "/orgs/{slug}/signups/{name}/refuse",
    status_code=204,
    summary="Refuse a sign-up: the request and its password are removed",
)
async def refuse(slug: SlugPath, name: UserPath, request: Request, user: CurrentUser) -> Response:
    store = await pending(request, user, slug, name)
    await asyncio.to_thread(store.settle_signup, name, slug, False)
    return Response(status_code=204)
