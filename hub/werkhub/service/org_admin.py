"""What an organisation's admins do for their own people (platform admins: for anyone's):
see and stop their members' servers, see and pause their members' scheduled jobs, and give
a member a new password (native login). Someone who is not a member of that organisation
answers 404, as does another organisation."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from werkhub.auth.names import name_problem
from werkhub.auth.userstore import UserStore, generate_password
from werkhub.booking import ledger
from werkhub.errors import Conflict, Invalid, NotFound
from werkhub.jobs.planning import first_fire, ts
from werkhub.jobs.store import Viewer as JobViewer
from werkhub.orgs.rules import members_group
from werkhub.service.identity import CurrentUser
from werkhub.service.job_models import JobId, JobOut
from werkhub.service.job_support import Sched, job_out, spec_of
from werkhub.service.orgs import (
    SlugPath,
    UserPath,
    hub,
    managed,
    not_of_another,
    set_in_group,
    store_of,
)

router = APIRouter(prefix="/api", tags=["organisations"])
#: what an organisation admin acts as towards the job store (limited to members here)
ORG_ADMIN = JobViewer(name="werkhub-org-admin", admin=True)


class ServerOut(BaseModel):
    user: str
    name: str
    ready: bool
    pending: str | None
    started: str | None
    last_activity: str | None


class NewPassword(BaseModel):
    user: str
    password: str


async def members_of(request: Request, user: Any, slug: str) -> set[str]:
    await managed(request, user, slug)
    return await asyncio.to_thread(store_of(request).org_members_of, slug)


async def member(request: Request, user: Any, slug: str, name: str) -> None:
    if name not in await members_of(request, user, slug):
        raise NotFound(f"{name} is not a member of '{slug}'.", field="user")


@router.get(
    "/orgs/{slug}/servers",
    response_model=list[ServerOut],
    summary="The organisation's members' running servers (organisation admins)",
)
async def servers(slug: SlugPath, request: Request, user: CurrentUser) -> list[ServerOut]:
    found = []
    for name in sorted(await members_of(request, user, slug)):
        # asked fresh (not the identity cache): an admin looks at what runs now
        reply = await hub(request, "GET", f"/users/{quote(name, safe='')}", ok=(200, 404))
        details = reply.json() if reply.status_code == 200 else {}
        for server_name, server in (details.get("servers") or {}).items():
            found.append(
                ServerOut(
                    user=name,
                    name=server_name,
                    ready=bool(server.get("ready")),
                    pending=server.get("pending"),
                    started=server.get("started"),
                    last_activity=server.get("last_activity"),
                )
            )
    return found


@router.delete(
    "/orgs/{slug}/servers/{member_name}",
    status_code=204,
    summary="Stop a member's server (organisation admins)",
)
async def stop_server(
    slug: SlugPath, member_name: UserPath, request: Request, user: CurrentUser
) -> Response:
    await member(request, user, slug, member_name)
    await hub(request, "DELETE", f"/users/{quote(member_name, safe='')}/server", ok=(202, 204, 400))
    request.app.state.auth.forget(member_name)
    return Response(status_code=204)


@router.get(
    "/orgs/{slug}/jobs",
    response_model=list[JobOut],
    summary="The organisation's members' scheduled jobs (organisation admins)",
)
async def jobs(slug: SlugPath, s: Sched, request: Request, user: CurrentUser) -> list[JobOut]:
    people = await members_of(request, user, slug)
    everyone = await run_in_threadpool(s.store.list_jobs, ORG_ADMIN, True)
    return [job_out(j) for j in everyone if j["owner"] in people]


@router.post(
    "/orgs/{slug}/jobs/{job_id}/pause",
    response_model=JobOut,
    summary="Pause a member's job (a running run finishes; organisation admins)",
)
async def pause_job(
    slug: SlugPath, job_id: JobId, s: Sched, request: Request, user: CurrentUser
) -> JobOut:
    people = await members_of(request, user, slug)
    job = await run_in_threadpool(s.store.get_job, ORG_ADMIN, job_id)
    if job["owner"] not in people:
        raise NotFound(f"No job {job_id} of a member of '{slug}'.")
    now = ledger.utcnow()
    paused = await run_in_threadpool(
        s.store.set_paused, ORG_ADMIN, job_id, True, first_fire(spec_of(job), now), ts(now)
    )
    s.wake()
    return job_out(paused)


@router.post(
    "/orgs/{slug}/members/{member_name}/password",
    response_model=NewPassword,
    summary="Give a member a new password, shown once (native login; organisation admins)",
)
async def reset_password(
    slug: SlugPath, member_name: UserPath, request: Request, user: CurrentUser
) -> NewPassword:
    await member(request, user, slug, member_name)
    cfg = request.app.state.config
    if cfg.auth.kind != "native":
        raise Invalid("passwords are kept by the single sign-on provider, not by werkhub")
    store = UserStore(request.app.state.env.state.users_db, cfg.auth.native.min_password_length)
    password = generate_password()
    await asyncio.to_thread(store.set_password, member_name, password, approved=True)
    return NewPassword(user=member_name, password=password)


class InviteIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="the new member's user name")
    days: float = Field(default=7, gt=0, le=90, description="days the invitation stays valid")


class InviteOut(BaseModel):
    name: str
    link: str = Field(description="shown once: it lets the person set their password")


@router.post(
    "/orgs/{slug}/invitations",
    status_code=201,
    response_model=InviteOut,
    summary="Invite a new member: their account in the organisation and a one-time link",
)
async def invite(slug: SlugPath, body: InviteIn, request: Request, user: CurrentUser) -> InviteOut:
    actor, _ = await managed(request, user, slug)
    cfg = request.app.state.config
    if cfg.auth.kind != "native":
        raise Invalid("with single sign-on people log in there; add them as members instead")
    problem = name_problem(body.name)
    if problem is not None:
        raise Invalid(problem, field="name")
    store = UserStore(request.app.state.env.state.users_db, cfg.auth.native.min_password_length)
    stored = await asyncio.to_thread(store.get, body.name)
    if stored is not None and stored.approved:
        raise Conflict(f"'{body.name}' can log in already; add them as a member instead")
    await not_of_another(request, actor, body.name)
    found = await asyncio.to_thread(store_of(request).membership, body.name)
    if found is not None and found.slug != slug:
        raise Conflict(f"{body.name} belongs to another organisation", field="name")
    await hub(request, "POST", f"/users/{quote(body.name, safe='')}", ok=(201, 409))
    await asyncio.to_thread(store_of(request).put_member, slug, body.name, False)
    await set_in_group(request, members_group(slug), body.name, True)
    code = await asyncio.to_thread(store.invite, body.name, actor.name, body.days)
    base = f"{cfg.hub.public_url}{cfg.hub.base_url}"
    return InviteOut(name=body.name, link=f"{base}hub/signup?invite={code}")
