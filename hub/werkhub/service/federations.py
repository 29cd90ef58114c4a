"""HTTP API of federations under /services/werkhub/api/federations (docs/federated-learning.md).

An organisation member creates a federation (their organisation owns it); the owner
organisation's admins invite organisations; an invited organisation's admin accepts
(naming a data folder in their home, and GPUs per run) or declines; a party's admin leaves;
the owner organisation's admins or the federation's creator revoke parties, start and
stop runs and get the ``flwr`` configuration. A federation the caller's organisation
neither owns nor was invited to answers 404. Refusals are 4xx with a sentence; a failed
registration leaves the party invited, a run that cannot start leaves a failed run with
the reason and no booking.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from werkhub.auth.hub import HubUser
from werkhub.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from werkhub.federation import rules
from werkhub.federation.rules import Standing
from werkhub.federation.store import FederationStore
from werkhub.orgs.rules import Actor
from werkhub.service.federation_models import FederationOut, FlwrConfig, PartyOut, RunOut
from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import actor_of

router = APIRouter(prefix="/api", tags=["federations"])
FedId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="the federation's id")]
RunId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="the run's id")]


def store_of(request: Request) -> FederationStore:
    return request.app.state.federations


def supervisor_of(request: Request) -> Any:
    supervisor = getattr(request.app.state, "federation_supervisor", None)
    if supervisor is None:
        raise Unavailable(
            "Federations cannot run here: Flower's runtime is not set up "
            "(.venv-flower, see docs/federated-learning.md)."
        )
    return supervisor


def when(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


async def visible(request: Request, user: HubUser, fid: int) -> tuple[Standing, dict[str, Any]]:
    """The federation and the caller's standing; 404 unless the caller may see it."""
    actor = await actor_of(request, user)
    try:
        fed = await asyncio.to_thread(store_of(request).get, fid)
    except NotFound:
        raise NotFound(f"No federation {fid}.") from None
    standing = Standing(
        actor, fed["owner"], fed["owner_org"], {p["org"]: p["state"] for p in fed["parties"]}
    )
    if not standing.sees:
        raise NotFound(f"No federation {fid}.")
    return standing, fed


def owned(standing: Standing, what: str) -> None:
    if not standing.owns:
        raise Forbidden(
            f"Only the federation's creator and admins of '{standing.owner_org}' {what}."
        )


def party_out(request: Request, standing: Standing, fid: int, party: dict[str, Any]) -> PartyOut:
    actor = standing.actor
    own = actor.platform_admin or actor.org == party["org"]
    supervisor = getattr(request.app.state, "federation_supervisor", None)
    node = None
    traffic = None
    if party["state"] == "accepted" and supervisor is not None:
        node = supervisor.node_state(fid, party["org"])
        try:
            traffic = supervisor.runtime.traffic(fid).get(party["org"])
        except Exception:
            traffic = None
    return PartyOut(
        org=party["org"],
        state=party["state"],
        user=party["user"] if own else None,
        data_folder=party["data_folder"] if own else None,
        gpus=party["gpus"],
        node=node,
        traffic=traffic,
    )


def federation_out(request: Request, standing: Standing, fed: dict[str, Any]) -> FederationOut:
    parties = [party_out(request, standing, fed["id"], p) for p in fed["parties"]]
    accepted = sum(1 for p in fed["parties"] if p["state"] == "accepted")
    return FederationOut(
        id=fed["id"],
        name=fed["name"],
        owner=fed["owner"],
        owner_org=fed["owner_org"],
        app=fed["app"],
        strategy=fed["strategy"],
        rounds=fed["rounds"],
        min_parties=fed["min_parties"],
        secure_aggregation=rules.secure_aggregation(fed["secure_aggregation"], accepted),
        secure_aggregation_setting=fed["secure_aggregation"],
        run_config=fed["run_config"] if standing.owns else {},
        state=fed["state"],
        parties=parties,
        created=when(fed["created"]) or "",
    )


def run_out(standing: Standing, run: dict[str, Any]) -> RunOut:
    info = run.get("mlflow") or {}
    mine = (info.get("parties") or {}).get(standing.actor.org or "")
    return RunOut(
        id=run["id"],
        federation_id=run["federation_id"],
        flower_run_id=run["flower_run_id"],
        status=run["status"],
        message=run["message"],
        started_by=run["started_by"],
        planned_rounds=run["rounds"],
        secure_aggregation=run["secure_aggregation"],
        parties=run["parties"],
        rounds=[
            {
                "round": r["round"],
                "parties": r["parties"],
                "loss": r["loss"],
                "metrics": r["metrics"],
            }
            for r in run["round_list"]
        ],
        started=when(run["started"]) or "",
        ended=when(run["ended"]),
        mlflow={"experiment_id": info.get("experiment_id"), "run_id": info.get("run_id")}
        if info.get("run_id")
        else None,
        party_mlflow={"experiment_id": mine["experiment_id"], "run_id": mine["run_id"]}
        if mine
        else None,
        model=run["model"],
    )


async def org_exists(request: Request, slug: str) -> None:
    orgs = request.app.state.orgs
    everyone = Actor(name="", platform_admin=True)
    try:
        await asyncio.to_thread(orgs.get, everyone, slug)
    except NotFound:
        raise Invalid(f"There is no organisation '{slug}' to invite.", field="org") from None


# federations ---------------------------------------------------------------------------
@router.get(
    "/federations",
    response_model=list[FederationOut],
    summary="Federations your organisation owns or was invited to",
)
async def listing(request: Request, user: CurrentUser) -> list[FederationOut]:
    actor = await actor_of(request, user)
    if actor.org is None and not actor.platform_admin:
        return []
    rows = await asyncio.to_thread(store_of(request).listing, actor.org, actor.platform_admin)
    out = []
    for fed in rows:
        standing = Standing(
            actor, fed["owner"], fed["owner_org"], {p["org"]: p["state"] for p in fed["parties"]}
        )
        out.append(federation_out(request, standing, fed))
    return out


@router.post(
    "/federations",
    status_code=201,
    response_model=FederationOut,
    summary="Create a federation owned by your organisation",
)
async def create(
    body: rules.FederationCreate, request: Request, user: CurrentUser
) -> FederationOut:
    actor = await actor_of(request, user)
    if user.kind != "user" or actor.org is None:
        raise Forbidden("Only members of an organisation create federations.")
    for slug in body.invite:
        await org_exists(request, slug)
    supervisor = getattr(request.app.state, "federation_supervisor", None)
    row = {
        "name": body.name,
        "owner": actor.name,
        "owner_org": actor.org,
        "app": body.app.model_dump(exclude_none=True),
        "strategy": body.strategy,
        "rounds": body.rounds,
        "min_parties": body.min_parties,
        "secure_aggregation": body.secure_aggregation,
        "run_config": body.run_config,
    }
    if supervisor is not None and body.app.folder is not None:
        await asyncio.to_thread(supervisor.app_dir, row)
    fed = await asyncio.to_thread(store_of(request).create, row, body.invite, actor.name)
    standing = Standing(actor, fed["owner"], fed["owner_org"], {})
    return federation_out(request, standing, fed)


@router.get("/federations/{fid}", response_model=FederationOut, summary="One federation")
async def one(fid: FedId, request: Request, user: CurrentUser) -> FederationOut:
    standing, fed = await visible(request, user, fid)
    return federation_out(request, standing, fed)


# parties -------------------------------------------------------------------------------
@router.post(
    "/federations/{fid}/invitations",
    status_code=201,
    response_model=FederationOut,
    summary="Invite an organisation (admins of the owner organisation)",
)
async def invite(
    fid: FedId, body: rules.Invitation, request: Request, user: CurrentUser
) -> FederationOut:
    standing, fed = await visible(request, user, fid)
    if not standing.invites():
        raise Forbidden(f"Only admins of '{fed['owner_org']}' invite organisations.")
    await org_exists(request, body.org)
    await asyncio.to_thread(store_of(request).move_party, fid, body.org, "invite", user.name)
    return await one(fid, request, user)


def own_party(standing: Standing, fed: dict[str, Any], what: str) -> dict[str, Any]:
    """The caller's organisation's party row (its admin only)."""
    actor = standing.actor
    if actor.org is None or not actor.org_admin:
        raise Forbidden(f"Only an admin of an invited organisation may {what}.")
    for party in fed["parties"]:
        if party["org"] == actor.org:
            return party
    raise Conflict(f"Organisation '{actor.org}' was not invited to this federation.")


def must_be(party: dict[str, Any], state: str, rule: str) -> None:
    """409 with ``rule`` unless the party is in ``state``."""
    if party["state"] != state:
        raise Conflict(
            f"Organisation '{party['org']}' is {party['state']} in this federation; {rule}."
        )


@router.post(
    "/federations/{fid}/accept",
    response_model=FederationOut,
    summary="Accept an invitation for your organisation (its admin)",
)
async def accept(
    fid: FedId, body: rules.Acceptance, request: Request, user: CurrentUser
) -> FederationOut:
    standing, fed = await visible(request, user, fid)
    party = own_party(standing, fed, "accept")
    must_be(party, "invited", "only an invited organisation accepts")
    supervisor = supervisor_of(request)
    values = {"user": user.name, "data_folder": body.data_folder, "gpus": body.gpus}
    await asyncio.to_thread(supervisor.data_folder, user.name, body.data_folder)
    if body.gpus and supervisor.bookings is not None:
        await asyncio.to_thread(supervisor.gpu_type)  # a site without GPUs says so now
    node = await supervisor.register(fed, {**party, **values})
    try:
        await asyncio.to_thread(
            store_of(request).move_party,
            fid,
            party["org"],
            "accept",
            user.name,
            {**values, "node": str(node)[:128]},
        )
    except Exception:
        await supervisor.unregister(fed, party["org"])
        raise
    return await one(fid, request, user)


@router.post(
    "/federations/{fid}/decline",
    response_model=FederationOut,
    summary="Decline an invitation for your organisation (its admin)",
)
async def decline(fid: FedId, request: Request, user: CurrentUser) -> FederationOut:
    standing, fed = await visible(request, user, fid)
    party = own_party(standing, fed, "decline")
    await asyncio.to_thread(store_of(request).move_party, fid, party["org"], "decline", user.name)
    return await one(fid, request, user)


@router.post(
    "/federations/{fid}/leave",
    response_model=FederationOut,
    summary="Leave a federation with your organisation (its admin)",
)
async def leave(fid: FedId, request: Request, user: CurrentUser) -> FederationOut:
    standing, fed = await visible(request, user, fid)
    party = own_party(standing, fed, "leave")
    must_be(party, "accepted", "only a party that accepted leaves")
    await supervisor_of(request).unregister(fed, party["org"])
    await asyncio.to_thread(store_of(request).move_party, fid, party["org"], "leave", user.name)
    return await one(fid, request, user)


@router.post(
    "/federations/{fid}/revoke",
    response_model=FederationOut,
    summary="Revoke an organisation's invitation or party (owner)",
)
async def revoke(
    fid: FedId, body: rules.Invitation, request: Request, user: CurrentUser
) -> FederationOut:
    standing, fed = await visible(request, user, fid)
    owned(standing, "revoke parties")
    party = next((p for p in fed["parties"] if p["org"] == body.org), None)
    if party is None:
        raise Conflict(f"Organisation '{body.org}' was not invited to this federation.")
    if party["state"] == "accepted":
        await supervisor_of(request).unregister(fed, body.org)
    await asyncio.to_thread(store_of(request).move_party, fid, body.org, "revoke", user.name)
    return await one(fid, request, user)


# runs ----------------------------------------------------------------------------------
@router.post(
    "/federations/{fid}/runs",
    status_code=202,
    response_model=RunOut,
    summary="Start a run of the federation (owner)",
)
async def start_run(
    fid: FedId, request: Request, user: CurrentUser, body: rules.RunCreate | None = None
) -> RunOut:
    standing, fed = await visible(request, user, fid)
    owned(standing, "start runs")
    if fed["state"] != "open":
        raise Conflict(f"Federation {fid} is {fed['state']}; runs start only in open ones.")
    run = await supervisor_of(request).start_run(fed, user.name, body or rules.RunCreate())
    return run_out(standing, run)


@router.get("/federations/{fid}/runs", response_model=list[RunOut], summary="Runs of a federation")
async def runs(fid: FedId, request: Request, user: CurrentUser) -> list[RunOut]:
    standing, _ = await visible(request, user, fid)
    rows = await asyncio.to_thread(store_of(request).runs, fid)
    return [run_out(standing, r) for r in rows]


@router.get(
    "/federations/{fid}/runs/{rid}",
    response_model=RunOut,
    summary="One run: its rounds so far, status, message, MLflow run and model",
)
async def run(fid: FedId, rid: RunId, request: Request, user: CurrentUser) -> RunOut:
    standing, _ = await visible(request, user, fid)
    found = await asyncio.to_thread(store_of(request).run, fid, rid)
    return run_out(standing, found)


@router.post(
    "/federations/{fid}/runs/{rid}/stop", response_model=RunOut, summary="Stop a run (owner)"
)
async def stop(fid: FedId, rid: RunId, request: Request, user: CurrentUser) -> RunOut:
    standing, fed = await visible(request, user, fid)
    found = await asyncio.to_thread(store_of(request).run, fid, rid)
    owned(standing, "stop runs")
    await supervisor_of(request).stop_run(fed, found, user.name)
    return run_out(standing, await asyncio.to_thread(store_of(request).run, fid, rid))


@router.get(
    "/federations/{fid}/flwr-config",
    response_model=FlwrConfig,
    summary="The flwr CLI's configuration and the federation's CA certificate (owner)",
)
async def flwr_config(
    fid: FedId,
    request: Request,
    user: CurrentUser,
    flwr_home: Annotated[
        str | None,
        Query(
            description="the absolute folder where you put config.toml and ca.pem (your "
            "FLWR_HOME); by default ~/.flwr in your own server",
            max_length=400,
        ),
    ] = None,
) -> FlwrConfig:
    standing, fed = await visible(request, user, fid)
    owned(standing, "get the flwr configuration")
    supervisor = supervisor_of(request)
    home = rules.check_flwr_home(flwr_home) if flwr_home else supervisor.flwr_home(user.name)
    plan = supervisor.link_plan(fed)
    link = await supervisor.runtime.ensure_link(plan)
    name = f"federation-{fed['name']}"
    ca = await asyncio.to_thread(link.ca_path.read_text)
    return FlwrConfig(
        connection=name,
        address=link.address,
        flwr_home=home,
        config_toml=supervisor.runtime.connection_toml(plan, name, home),
        ca_certificate=ca,
    )


# the service's start and end -------------------------------------------------------------
async def open_federations(app: Any, cfg: Any, env: Any, manager: Any) -> None:
    """The store, and the supervisor where Flower's runtime is here (it adopts the
    SuperLinks and live runs the database knows)."""
    from werkhub.federation.setup import build
    from werkhub.service.templates import templates_root

    app.state.federations = FederationStore(manager.writer, manager.reader)
    supervisor = await asyncio.to_thread(
        build, cfg, env, manager, app.state.auth, app.state.orgs, templates_root(env.templates_dir)
    )
    app.state.federation_supervisor = supervisor
    if supervisor is not None:
        await supervisor.start()


async def close_federations(app: Any) -> None:
    supervisor = getattr(app.state, "federation_supervisor", None)
    app.state.federation_supervisor = None
    if supervisor is not None:
        await supervisor.close()
