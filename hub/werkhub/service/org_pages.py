"""Pages of organisations: ``/orgs`` where platform admins manage every organisation
(create, rename, remove, budget, guarantees, organisation admins) and organisation admins
find theirs, and ``/orgs/{slug}`` where an organisation's admins manage its people
(members, invitations, sign-ups, groups, servers, jobs, policies) with a link to its
statement. Everything on them comes from the JSON API called as the viewer, and every
change goes to that API from ``static/orgs.js`` with the CSRF header. Anyone who may not
manage an organisation gets 404, as from the API."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import SlugPath, actor_of, store_of
from werkhub.service.pages.views import Api, render

router = APIRouter(include_in_schema=False)
NOT_FOUND = "Not found."
#: the fields of a booking policy, in the order the forms show them
POLICY_FIELDS = (
    ("gpu_hours_per_week", "GPU-hours per week"),
    ("max_booking_hours", "Longest booking (h)"),
    ("max_advance_days", "Book ahead (days)"),
    ("max_concurrent_gpus", "GPUs at once"),
)


@router.get("/orgs", response_class=HTMLResponse)
async def organisations(request: Request, user: CurrentUser) -> HTMLResponse:
    actor = await actor_of(request, user)
    if not (actor.platform_admin or actor.org_admin):
        raise HTTPException(404, NOT_FOUND)
    api = Api(request)
    try:
        found = await api.get("/orgs")
        guarantees: dict[str, dict[str, int]] = {}
        admins: dict[str, list[str]] = {}
        for org in found:
            guarantees[org["slug"]] = await api.get(f"/orgs/{org['slug']}/guarantees")
            members = await api.get(f"/orgs/{org['slug']}/members")
            admins[org["slug"]] = [m["user"] for m in members if m["admin"]]
        gpus = await api.get("/gpus")
    finally:
        await api.aclose()
    return render(
        request,
        user,
        "orgs.html",
        orgs=found,
        guarantees=guarantees,
        admins=admins,
        gpu_types=[t["gpu_type"] for t in gpus["types"]],
        platform=actor.platform_admin,
    )


@router.get("/orgs/{slug}", response_class=HTMLResponse)
async def organisation(slug: SlugPath, request: Request, user: CurrentUser) -> HTMLResponse:
    actor = await actor_of(request, user)
    if not actor.manages(slug):
        raise HTTPException(404, f"No organisation '{slug}'.")
    api = Api(request)
    try:
        org = await api.get(f"/orgs/{slug}")
        members = await api.get(f"/orgs/{slug}/members")
        groups = await api.get(f"/orgs/{slug}/groups")
        servers, servers_problem = await api.maybe(f"/orgs/{slug}/servers")
        jobs, jobs_problem = await api.maybe(f"/orgs/{slug}/jobs")
        policies = await api.get(f"/orgs/{slug}/policies")
        guarantees = await api.get(f"/orgs/{slug}/guarantees")
        native = request.app.state.config.auth.kind == "native"
        signups, _ = await api.maybe(f"/orgs/{slug}/signups") if native else ([], None)
        gpus = await api.get("/gpus")
    finally:
        await api.aclose()
    inner = await asyncio.to_thread(
        store_of(request).groups, actor, slug
    )  # the hub groups of the organisation, for the policy form
    return render(
        request,
        user,
        "org_admin.html",
        org=org,
        members=members,
        groups=groups,
        inner=[g for g in inner if g.startswith(f"{slug}-")],
        servers=servers or [],
        servers_problem=servers_problem,
        jobs=jobs or [],
        jobs_problem=jobs_problem,
        policies=policies,
        guarantees=guarantees,
        signups=signups or [],
        native=native,
        gpu_types=[t["gpu_type"] for t in gpus["types"]],
        policy_fields=POLICY_FIELDS,
        describe=describe,
    )


def describe(policy: dict[str, Any]) -> str:
    """One line for a policy: only the limits it sets."""
    parts = [
        f"{label}: {policy[key]:g}" for key, label in POLICY_FIELDS if policy.get(key) is not None
    ]
    if policy.get("allowed_gpu_types") is not None:
        parts.append(f"types: {', '.join(policy['allowed_gpu_types']) or 'none'}")
    if policy.get("week") == "calendar":
        parts.append("calendar weeks")
    return "; ".join(parts) or "no limits"
