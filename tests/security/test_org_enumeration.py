"""Every route of the werkhub service, walked as organisation A's admin with path (and
object query) parameters that name organisation B's objects: its slug, members, groups,
bookings, waitlist entries, jobs, runs and reports, experiments, registered models,
endpoints and pending sign-ups. Each must answer 404 or 403: never 2xx, never 5xx, and
never a body with B's data. Routes under ``/orgs/{slug}`` are walked twice, once with B's
slug and once with A's own slug next to B's objects. Then the hub's own REST API, which A's
admin reaches through a hub role filtered to A's members, against B's users and groups.

The routes come from the service's app itself, so a route added later is walked too: a
route whose parameter this test cannot fill fails it (name B's object for it in VALUES),
and so does a route without object parameters that is not in EXEMPT (say there why it
holds nothing of another organisation)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from tests.security.test_accounts import Browser
from tests.support.hub import Werkhub, running_werkhub
from tests.support.serving import register_tagged
from werkhub.service.app import create_app

pytestmark = pytest.mark.hub
PREFIX = "/services/werkhub"
API = f"{PREFIX}/api"
A, B = "enacme", "enbeta"
ANN, AL, BOB, BEA = "en-ann", "en-al", "en-bob", "en-bea"
SIGNUP = "en-bsign"
B_GROUP = "team"
B_JOB = "beta-secret-job"
B_EXPERIMENT = f"{BEA}/beta-secret-exp"
B_MODEL = f"{BEA}~betamodel"
B_ENDPOINT = "betaep"
B_FEDERATION = "beta-secret-federation"
#: routes without parameters that name an object: each acts on the caller's own things,
#: lists only what the caller may see, or is for platform admins or the hub. GETs among
#: them are still called as A's admin (with B's names in object query parameters) and
#: their answers checked for B's data; the others create or change only the caller's own.
EXEMPT = {
    ("GET", "/api/openapi.json"): "the API's description, the same for everyone",
    ("GET", "/api/health"): "liveness, no data",
    ("GET", "/api/me"): "the caller's own identity",
    ("POST", "/api/me/server/restart"): "restarts the caller's own server",
    ("GET", "/api/gpus"): "the site's inventory, the same for everyone",
    ("GET", "/api/availability"): "busy time of everyone, without names",
    ("POST", "/api/bookings"): "books for the caller (for others: platform admins only)",
    ("GET", "/api/bookings"): "the caller's bookings, others' without names",
    ("GET", "/api/waitlist"): "the caller's waitlist entries",
    ("GET", "/api/quota"): "the caller's own policy and quota",
    ("GET", "/api/policies"): "the configured policies: platform admins only",
    ("GET", "/api/notifications"): "the caller's own notifications",
    ("POST", "/api/notifications/read"): "marks the caller's own notifications",
    ("GET", "/api/usage"): "usage of everyone: platform admins only",
    ("POST", "/api/spawn/prepare"): "the hub's spawner only",
    ("GET", "/api/spawn/free"): "the hub's spawner only",
    ("POST", "/api/spawn/started"): "the hub's spawner only",
    ("POST", "/api/spawn/stopped"): "the hub's spawner only",
    ("POST", "/api/jobs"): "creates the caller's own job",
    ("GET", "/api/jobs"): "the caller's own jobs",
    ("GET", "/api/reports"): "reports of the caller and shared with their groups",
    ("POST", "/api/jobs/inspect"): "reads a notebook in the caller's own home",
    ("GET", "/api/cron/preview"): "computes times from a cron expression",
    ("POST", "/api/probe"): "the benchmark's floor, no data",
    ("POST", "/api/endpoints"): "creates the caller's own endpoint",
    ("GET", "/api/endpoints"): "the caller's endpoints and those shared with their groups",
    ("GET", "/api/orgs"): "the organisations the caller may see",
    ("POST", "/api/orgs"): "platform admins only",
    ("GET", "/api/slurm/status"): "the Slurm reconciler's report: platform admins only",
    ("GET", "/api/templates"): "the template gallery, the same for everyone",
    ("GET", "/oauth_callback"): "the hub's OAuth round trip",
    ("GET", ""): "redirects to the home page",
    ("GET", "/"): "the caller's home page",
    ("GET", "/book"): "the caller's booking page",
    ("GET", "/jobs"): "the caller's jobs page",
    ("GET", "/reports"): "the caller's reports page",
    ("GET", "/admin"): "platform admins only",
    ("GET", "/endpoints"): "the caller's endpoints page",
    ("GET", "/orgs"): "the organisations the caller manages",
    ("GET", "/api/federations"): "federations the caller's organisation owns or was invited to",
    ("POST", "/api/federations"): "creates a federation owned by the caller's organisation",
    ("GET", "/federations"): "the federations page of the caller's organisation",
}


@dataclass
class World:
    hub: Werkhub
    tokens: dict[str, str]
    #: (parameter name, the path segment before it) -> B's object; (name, None): any place
    values: dict[tuple[str, str | None], str] = field(default_factory=dict)
    #: strings only B's objects hold: none may appear in an answer to A's admin unless the
    #: request itself named it
    secrets: set[str] = field(default_factory=set)


def later(hours: float) -> str:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    return (base + timedelta(hours=hours)).isoformat()


def ok(reply: httpx.Response, *codes: int) -> dict[str, Any]:
    assert reply.status_code in (codes or (200, 201)), reply.text
    return reply.json() if reply.content else {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("enumeration")
    with running_werkhub(tmp, {"jobs": {"tick_seconds": 1}}) as hub:
        tokens = {name: hub.create_user(name) for name in (ANN, AL, BOB, BEA)}
        with hub.admin() as admin:
            for slug in (A, B):
                ok(admin.post(f"{API}/orgs", json={"slug": slug, "name": slug.upper()}))
            for slug, user, is_admin in (
                (A, ANN, True),
                (A, AL, False),
                (B, BOB, True),
                (B, BEA, False),
            ):
                ok(admin.put(f"{API}/orgs/{slug}/members/{user}", json={"admin": is_admin}))
        with hub.client(tokens[ANN]) as ann:
            ok(ann.post(f"{API}/orgs/{A}/groups", json={"name": "lab"}))
        with hub.client(tokens[BOB]) as bob:
            ok(bob.post(f"{API}/orgs/{B}/groups", json={"name": B_GROUP}))
            assert bob.put(f"{API}/orgs/{B}/groups/{B_GROUP}/members/{BEA}").status_code == 204
            ok(bob.put(f"{API}/orgs/{B}/policies/users/{BEA}", json={"max_booking_hours": 7}))
        # the hub gives organisation admins their role at its start
        hub.stop()
        hub.start()
        world = World(hub, tokens)
        world.values.update(beta_objects(hub, tokens, tmp))
        world.secrets = {
            BOB,
            BEA,
            SIGNUP,
            f"{B}-{B_GROUP}",
            B_JOB,
            B_EXPERIMENT,
            B_MODEL,
            B_ENDPOINT,
            B_FEDERATION,
        }
        yield world


def beta_objects(
    hub: Werkhub, tokens: dict[str, str], tmp: Path
) -> dict[tuple[str, str | None], str]:
    """B's objects, made by B's member (and a pending sign-up for B)."""
    home = hub.state / "homes" / BEA
    home.mkdir(parents=True, exist_ok=True)
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {"tags": []},
                "outputs": [],
                "source": "x = 1",
            }
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (home / "beta.ipynb").write_text(json.dumps(notebook))
    version = register_tagged(hub.url, tokens[BEA], BEA, B_MODEL, 1, tmp / "model")
    with hub.client(tokens[BEA]) as bea:
        booking = ok(
            bea.post(
                f"{API}/bookings",
                json={"gpu_type": "H100", "count": 2, "start": later(1), "end": later(3)},
            )
        )
        # the two H100 are hers then: a third request waits
        queued = bea.post(
            f"{API}/bookings",
            json={
                "gpu_type": "H100",
                "count": 1,
                "start": later(1),
                "end": later(2),
                "waitlist": True,
                "latest_start": later(2),
            },
        )
        assert queued.status_code == 202, queued.text
        entry = str(queued.json()["id"])
        job = ok(bea.post(f"{API}/jobs", json={"name": B_JOB, "notebook": "beta.ipynb"}))
        runs = ok(bea.get(f"{API}/jobs/{job['id']}/runs"))
        if not runs:
            ok(bea.post(f"{API}/jobs/{job['id']}/run"), 200, 201, 202)
            runs = ok(bea.get(f"{API}/jobs/{job['id']}/runs"))
        experiment = ok(
            bea.post(
                "/services/mlflow/api/2.0/mlflow/experiments/create", json={"name": B_EXPERIMENT}
            )
        )
        endpoint = bea.post(
            f"{API}/endpoints",
            json={
                "name": B_ENDPOINT,
                "model": B_MODEL,
                "version": version,
                "min_replicas": 0,
                "groups": [f"{B}-{B_GROUP}"],
            },
        )
        assert endpoint.status_code == 201, endpoint.text
        invocations = endpoint.json()["url"]
        token = ok(bea.post(f"{API}/endpoints/{B_ENDPOINT}/tokens", json={"note": "beta line"}))
        federation = ok(
            bea.post(
                f"{API}/federations",
                json={
                    "name": B_FEDERATION,
                    "app": {"template": "federated-quality-inspection"},
                },
            )
        )
    with Browser(hub) as person:
        data = {
            "username": SIGNUP,
            "password": "a-long-password",
            "password_repeat": "a-long-password",
            "organisation": B,
        }
        assert person.post("/hub/signup", data, form="/hub/signup").status_code == 200
    return {
        ("slug", None): B,
        ("member", None): BEA,
        ("member_name", None): BEA,
        ("owner", None): BEA,
        ("user", None): BEA,
        ("name", "users"): BEA,
        ("name", "models"): B_MODEL,
        ("name", "endpoints"): B_ENDPOINT,  # also /endpoints/{owner}/{name}/live
        ("name", "groups"): B_GROUP,
        ("name", "signups"): SIGNUP,
        ("group", None): f"{B}-{B_GROUP}",
        ("booking_id", None): str(booking["id"]),
        ("entry_id", None): entry,
        ("job_id", None): str(job["id"]),
        ("run_id", None): str(runs[0]["id"]),
        ("experiment_id", None): str(experiment["experiment_id"]),
        ("token_id", None): str(token["id"]),
        ("fid", None): str(federation["id"]),
        ("rid", None): "1",  # B's federation has no run: A's admin must not learn even that
        ("name", "flwr"): "config.toml",
        # the model gateway (an ASGI app ahead of the service's routes): B's endpoint
        ("gateway", None): invocations,
    }


def routes() -> list[tuple[str, str, APIRoute | None]]:
    """(method, path below the prefix, route) of every route of the service."""
    found = []
    for context in iter_route_contexts(create_app(PREFIX).routes):
        route = context.route if isinstance(context.route, APIRoute) else None
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                found.append((method, context.path.removeprefix(PREFIX), route))
    return found


ROUTES = routes()
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
#: bodies that pass validation, so that the route's own check of who may act is reached
#: (a route that needs another answers 422, which fails the walk: add its body here)
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/api/bookings/{booking_id}"): {"end": later(4)},
    ("POST", "/api/experiments/{experiment_id}/share"): {"group": f"org-{A}", "permission": "READ"},
    ("POST", "/api/models/{name}/share"): {"group": f"org-{A}", "permission": "READ"},
    ("POST", "/api/reports/{run_id}/share"): {"group": f"org-{A}"},
    ("PATCH", "/api/jobs/{job_id}"): {"name": "taken-over"},
    ("PATCH", "/api/endpoints/{name}"): {"min_replicas": 0},
    ("POST", "/api/endpoints/{name}/tokens"): {"note": "taken over"},
    ("PATCH", "/api/orgs/{slug}"): {"name": "taken over"},
    ("PUT", "/api/orgs/{slug}/guarantees"): {},
    ("PUT", "/api/orgs/{slug}/members/{member}"): {"admin": True},
    ("POST", "/api/orgs/{slug}/groups"): {"name": "grab"},
    ("PUT", "/api/orgs/{slug}/policies/users/{member}"): {"max_booking_hours": 100},
    ("PUT", "/api/orgs/{slug}/policies/groups/{group}"): {"max_booking_hours": 100},
    ("POST", "/api/orgs/{slug}/invitations"): {"name": "en-newbie"},
    ("POST", "/api/federations/{fid}/invitations"): {"org": A},
    ("POST", "/api/federations/{fid}/accept"): {"data_folder": "data"},
    ("POST", "/api/federations/{fid}/revoke"): {"org": B},
}


def value_for(world: World, name: str, path: str) -> str:
    literal = [p for p in path.split("{" + name)[0].split("/") if p and not p.startswith("{")]
    before = literal[-1] if literal else ""
    found = world.values.get((name, before), world.values.get((name, None)))
    assert found is not None, (
        f"{path}: no value for {{{name}}}; name organisation B's object it takes in VALUES"
    )
    return found


def object_query(world: World, route: APIRoute | None) -> dict[str, str]:
    """B's names for the route's query parameters that name an owner, user or group."""
    if route is None:
        return {}
    names = {p.alias for p in route.dependant.query_params}
    return {n: world.values[(n, None)] for n in names if (n, None) in world.values}


def leaked(world: World, reply: httpx.Response, sent: str) -> set[str]:
    """B's strings in the answer that the request did not name itself."""
    return {s for s in world.secrets if s in reply.text and s not in sent}


def call(
    world: World, client: httpx.Client, method: str, path: str, route: APIRoute | None, slug: str
) -> tuple[httpx.Response, str]:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return (
            slug
            if name == "slug" and path.startswith("/api/orgs")
            else value_for(world, name, path)
        )

    url = PREFIX + PARAM.sub(fill, path)
    params = object_query(world, route)
    body = BODIES.get((method, path), {}) if method in ("POST", "PUT", "PATCH") else None
    reply = client.request(
        method, url, params=params, json=body, headers={"Accept": "application/json"}
    )
    return reply, f"{url} {params} {json.dumps(body)}"


def test_every_route_exempt_or_walked() -> None:
    """Routes without object parameters are listed in EXEMPT, and only those."""
    bare = {(m, p) for m, p, _ in ROUTES if not PARAM.search(p)}
    assert bare - set(EXEMPT) == set(), (
        "routes without object parameters: add to EXEMPT, saying why"
    )
    assert set(EXEMPT) - bare == set(), "EXEMPT names routes that are gone or take parameters"
    assert len(ROUTES) - len(bare) >= 50


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, _ in ROUTES if PARAM.search(p)],
    ids=[f"{m} {p}" for m, p, _ in ROUTES if PARAM.search(p)],
)
def test_organisation_admin_reaches_nothing_of_the_other_organisation(
    world: World, method: str, path: str
) -> None:
    route = next(r for m, p, r in ROUTES if (m, p) == (method, path))
    slugs = [B, A] if "{slug}" in path and path.startswith("/api/orgs") else [B]
    if slugs == [B, A] and len(PARAM.findall(path)) == 1:
        slugs = [B]  # with A's own slug and nothing else: A's own organisation
    with world.hub.client(world.tokens[ANN]) as ann:
        for slug in slugs:
            reply, sent = call(world, ann, method, path, route, slug)
            assert reply.status_code in (403, 404), (
                method,
                sent,
                reply.status_code,
                reply.text[:300],
            )
            assert not leaked(world, reply, sent), (method, sent, reply.text[:300])


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, _ in ROUTES if not PARAM.search(p) and m == "GET"],
)
def test_listings_hold_nothing_of_the_other_organisation(
    world: World, method: str, path: str
) -> None:
    route = next(r for m, p, r in ROUTES if (m, p) == (method, path))
    with world.hub.client(world.tokens[ANN], follow_redirects=True) as ann:
        reply, sent = call(world, ann, method, path, route, B)
        assert reply.status_code < 500, (sent, reply.text[:300])
        assert not leaked(world, reply, sent), (sent, reply.text[:300])


def test_the_hubs_own_api_refuses_the_other_organisations_people(world: World) -> None:
    b_group = f"{B}-{B_GROUP}"
    with world.hub.client(world.tokens[ANN]) as ann:
        # the role is in force: A's admin reaches A's member
        assert ann.get(f"/hub/api/users/{AL}").status_code == 200
        for method, path, body in (
            ("GET", f"/hub/api/users/{BEA}", None),
            ("GET", f"/hub/api/users/{BOB}", None),
            ("PATCH", f"/hub/api/users/{BEA}", {"admin": True}),
            ("POST", f"/hub/api/users/{BEA}/server", None),
            ("POST", f"/hub/api/users/{BEA}/servers/grab", None),
            ("DELETE", f"/hub/api/users/{BEA}/server", None),
            ("GET", f"/hub/api/users/{BEA}/tokens", None),
            ("POST", f"/hub/api/users/{BEA}/tokens", {"note": "grab"}),
            ("GET", f"/hub/api/users/{BEA}/tokens/a1", None),
            ("POST", f"/hub/api/users/{BEA}/activity", {"last_activity": later(0)}),
            ("GET", f"/hub/api/users/{BEA}/shared", None),
            ("GET", f"/hub/api/groups/{b_group}", None),
            ("GET", f"/hub/api/groups/org-{B}", None),
            ("POST", f"/hub/api/groups/org-{B}/users", {"users": [AL]}),
            ("DELETE", f"/hub/api/groups/org-{B}/users", {"users": [BEA]}),
            ("POST", f"/hub/api/groups/org-{A}/users", {"users": [BEA]}),
            ("POST", f"/hub/api/groups/{b_group}/users", {"users": [AL]}),
            ("DELETE", f"/hub/api/groups/{b_group}", None),
            ("POST", f"/hub/api/users/{BEA}/tokens", {"note": "grab", "scopes": ["read:users"]}),
            ("DELETE", f"/hub/api/users/{BEA}", None),
        ):
            reply = ann.request(method, path, json=body)
            assert reply.status_code in (403, 404), (
                method,
                path,
                reply.status_code,
                reply.text[:300],
            )
        for path in ("/hub/api/users", "/hub/api/groups"):
            listed = ann.get(path)
            assert listed.status_code in (200, 403), listed.text
            assert BEA not in listed.text and f"org-{B}" not in listed.text, listed.text[:300]
    with world.hub.admin() as admin:  # nothing of B changed
        bea = admin.get(f"/hub/api/users/{BEA}").json()
        assert bea["admin"] is False and sorted(bea["groups"]) == sorted([f"org-{B}", b_group])
        assert not bea["servers"]
        assert AL not in admin.get(f"/hub/api/groups/org-{B}").json()["users"]


def test_the_model_gateway_refuses_the_other_organisations_endpoint(world: World) -> None:
    """The gateway sits ahead of the routes walked above: B's endpoint, shared with B's
    group, does not exist for A's admin."""
    invocations = world.values[("gateway", None)]
    ping = invocations.rsplit("/", 1)[0] + "/ping"
    token = {"Authorization": f"Bearer {world.tokens[ANN]}"}
    with world.hub.client() as client:
        called = client.post(invocations, json={"inputs": [[1.0, 2.0, 3.0]]}, headers=token)
        assert called.status_code == 404 and "No endpoint" in called.text, called.text
        assert client.get(ping, headers=token).status_code == 404
        # the same answer as for an endpoint that does not exist
        missing = client.get(ping.replace(B_ENDPOINT, "nosuchep"), headers=token)
        assert missing.status_code == 404
