"""Pages of federations (issue 17): ``/federations`` lists those the viewer's organisation
owns, is invited to or takes part in (platform admins: all), with a form to create one and,
for an invited organisation's admins, the forms to accept (data folder, GPUs) or decline;
``/federations/{fid}`` shows one: its parties and their state (invite and revoke for the
owner organisation's admins, leave for a party's admins), the form to start a run, every
run with its rounds so far (a table and a small loss/metric chart, fetched again while the
run goes on), its message, its MLflow run and registered model, and the ``flwr run``
configuration to download.

Everything on them comes from the JSON API (``/api/federations``, werkhub.service.federations)
called as the viewer; changes go to that API from ``static/orgs.js`` (the declarative forms)
and ``static/federations.js`` (the forms with nested bodies) through werkhub.js's helper,
with the CSRF header. What the API does not show the viewer answers 404 here too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from werkhub.federation.rules import RUN_ENDED, TEMPLATES, Standing
from werkhub.orgs.rules import Actor
from werkhub.service.identity import CurrentUser
from werkhub.service.orgs import actor_of
from werkhub.service.pages.svg import minute_chart
from werkhub.service.pages.views import ENV, Api, ApiError, local, render, tz

router = APIRouter(include_in_schema=False)
FederationId = Annotated[int, Path(ge=1, le=2**31 - 1, description="federation id")]
RunId = Annotated[int, Path(ge=1, le=2**31 - 1, description="run id")]
NOT_FOUND = "No such federation."
STRATEGIES = (("fedavg", "FedAvg"), ("fedprox", "FedProx"), ("fedadam", "FedAdam"))
#: the metrics a chart shows besides the loss (the table shows all)
CHART_METRICS = 3
#: the files of the ``flwr run`` configuration: page name -> (field of the API's answer, type)
FLWR_FILES = {
    "config.toml": ("config_toml", "application/toml"),
    "ca.pem": ("ca_certificate", "application/x-pem-file"),
}


@dataclass(frozen=True)
class Roles:
    """What the viewer may do on one federation, by the API's own rules
    (:class:`werkhub.federation.rules.Standing`); the API decides again on every call."""

    owns: bool  # creator, owner organisation admin, platform admin: runs, revoke, flwr config
    invites: bool  # owner organisation admin, platform admin: invite organisations
    invited_admin: bool  # an admin of an invited organisation: accept or decline for it
    party_admin: bool  # an admin of an organisation taking part: leave


def party_of(federation: dict[str, Any], org: str | None) -> dict[str, Any] | None:
    """The federation's party entry of organisation ``org`` (any state), or None."""
    if org is None:
        return None
    return next((p for p in federation.get("parties", []) if p.get("org") == org), None)


def roles(federation: dict[str, Any], actor: Actor) -> Roles:
    standing = Standing(
        actor=actor,
        owner=str(federation.get("owner", "")),
        owner_org=str(federation.get("owner_org", "")),
        parties={p["org"]: p["state"] for p in federation.get("parties", [])},
    )
    mine = party_of(federation, actor.org)
    state = mine.get("state") if mine else None
    # a platform admin may answer for any organisation through the API; the page offers
    # accept, decline and leave only to the organisation's own admins (the party user is
    # the admin who accepted, with their home's data folder)
    own_admin = actor.org is not None and actor.org_admin
    return Roles(
        owns=standing.owns,
        invites=standing.invites(),
        invited_admin=own_admin and state == "invited",
        party_admin=own_admin and state == "accepted",
    )


def sort_federations(
    federations: list[dict[str, Any]], org: str | None
) -> dict[str, list[dict[str, Any]]]:
    """The list page's sections: owned by ``org``, inviting it, with it as a party, and the
    rest (what a platform admin sees of others, or where ``org`` left or declined)."""
    out: dict[str, list[dict[str, Any]]] = {"owned": [], "invited": [], "party": [], "other": []}
    for fed in federations:
        mine = party_of(fed, org)
        if org is not None and fed.get("owner_org") == org:
            out["owned"].append(fed)
        elif mine and mine.get("state") == "invited":
            out["invited"].append(fed)
        elif mine and mine.get("state") == "accepted":
            out["party"].append(fed)
        else:
            out["other"].append(fed)
    return out


def count_parties(federation: dict[str, Any]) -> dict[str, int]:
    """How many parties are in each state: ``{"accepted": 2, "invited": 1}``."""
    counts: dict[str, int] = {}
    for party in federation.get("parties", []):
        counts[party.get("state", "?")] = counts.get(party.get("state", "?"), 0) + 1
    return counts


def figure(value: Any) -> str:
    """A loss or metric as people read it: four significant digits, '-' for none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"


def metric_names(rounds: list[dict[str, Any]]) -> list[str]:
    """Every metric name that any round reports, sorted."""
    return sorted({str(k) for r in rounds for k in (r.get("metrics") or {})})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def rounds_chart(rounds: list[dict[str, Any]]) -> str:
    """A small SVG chart of the loss and the first few metrics per round ('' for none)."""
    if not rounds:
        return ""
    series: dict[str, list[float | None]] = {"loss": [_number(r.get("loss")) for r in rounds]}
    for name in metric_names(rounds)[:CHART_METRICS]:
        series[name] = [_number((r.get("metrics") or {}).get(name)) for r in rounds]
    labels = [f"round {r.get('round', i + 1)}" for i, r in enumerate(rounds)]
    return minute_chart(labels, series, "Loss and metrics of the global model per round", "")


def size(count: Any) -> str:
    """Bytes as people read them: '812 B', '1.5 MB'."""
    if isinstance(count, bool) or not isinstance(count, int | float) or count < 0:
        return "-"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return "-"  # not reached


def mlflow_url(hub: str, run: dict[str, Any], key: str = "mlflow") -> str | None:
    """The MLflow UI's page of the run's global metrics (``party_mlflow``: the viewer's
    organisation's local ones), or None before there is one."""
    found = run.get(key) or {}
    experiment, run_id = found.get("experiment_id"), found.get("run_id")
    if not experiment or not run_id:
        return None
    return f"{hub}services/mlflow/#/experiments/{quote(str(experiment))}/runs/{quote(str(run_id))}"


def model_url(hub: str, run: dict[str, Any]) -> str | None:
    """The MLflow UI's page of the registered global model's version, or None."""
    model = run.get("model") or {}
    if not model.get("name") or model.get("version") in (None, ""):
        return None
    name, version = quote(str(model["name"]), safe=""), quote(str(model["version"]), safe="")
    return f"{hub}services/mlflow/#/models/{name}/versions/{version}"


def run_view(hub: str, run: dict[str, Any]) -> dict[str, Any]:
    """What the run's part of the page shows, worked out once."""
    rounds = [r for r in run.get("rounds") or [] if isinstance(r, dict)]
    return {
        "run": run,
        "rounds": rounds,
        "metrics": metric_names(rounds),
        "chart": rounds_chart(rounds),
        "mlflow": mlflow_url(hub, run),
        "party_mlflow": mlflow_url(hub, run, "party_mlflow"),
        "model": model_url(hub, run),
        "ended": run.get("status") in RUN_ENDED,
    }


# ---- pages ---------------------------------------------------------------------------
@router.get("/federations", response_class=HTMLResponse)
async def federations(request: Request, user: CurrentUser) -> HTMLResponse:
    actor = await actor_of(request, user)
    if not (actor.platform_admin or actor.org):
        raise HTTPException(404, NOT_FOUND)
    api = Api(request)
    try:
        found, problem = await api.maybe("/federations")
    finally:
        await api.aclose()
    found = found or []
    return render(
        request,
        user,
        "federations.html",
        sections=sort_federations(found, actor.org),
        roles={f["id"]: roles(f, actor) for f in found},
        counts={f["id"]: count_parties(f) for f in found},
        actor=actor,
        problem=problem,
        strategies=STRATEGIES,
        templates=TEMPLATES,
    )


async def _federation(api: Api, fid: int) -> dict[str, Any]:
    try:
        return await api.get(f"/federations/{fid}")
    except ApiError as exc:
        if exc.status in (403, 404):
            raise HTTPException(404, NOT_FOUND) from exc
        raise


async def _runs(api: Api, fid: int) -> tuple[list[dict[str, Any]], str | None]:
    found, problem = await api.maybe(f"/federations/{fid}/runs")
    runs = sorted(found or [], key=lambda r: r.get("id", 0), reverse=True)
    for i, run in enumerate(runs):
        if "rounds" not in run:  # a short list entry: the run's own answer has its rounds
            runs[i] = await api.get(f"/federations/{fid}/runs/{run['id']}")
    return runs, problem


@router.get("/federations/{fid}", response_class=HTMLResponse)
async def federation(fid: FederationId, request: Request, user: CurrentUser) -> HTMLResponse:
    actor = await actor_of(request, user)
    api = Api(request)
    try:
        fed = await _federation(api, fid)
        runs, runs_problem = await _runs(api, fid)
    finally:
        await api.aclose()
    hub = request.app.state.env.hub_base_url
    return render(
        request,
        user,
        "federation.html",
        fed=fed,
        may=roles(fed, actor),
        actor=actor,
        runs=[run_view(hub, r) for r in runs],
        runs_problem=runs_problem,
        figure=figure,
        size=size,
    )


@router.get("/federations/{fid}/runs/{rid}/live", response_class=HTMLResponse)
async def run_live(
    fid: FederationId, rid: RunId, request: Request, user: CurrentUser
) -> HTMLResponse:
    """The run's part of the federation page alone (the page fetches it again while the run
    goes on); 404 when the viewer may not see it."""
    actor = await actor_of(request, user)
    api = Api(request)
    try:
        fed = await _federation(api, fid)
        try:
            run = await api.get(f"/federations/{fid}/runs/{rid}")
        except ApiError as exc:
            raise HTTPException(404, "No such run.") from exc
    finally:
        await api.aclose()
    hub, zone = request.app.state.env.hub_base_url, tz(request)
    html = ENV.get_template("_federation_run.html").render(
        prefix=request.app.state.env.prefix,
        fed=fed,
        may=roles(fed, actor),
        r=run_view(hub, run),
        figure=figure,
        local=lambda v, fmt="%a %d %b %H:%M": local(v, zone, fmt),
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def flwr_file(fid: int, name: str, request: Request) -> PlainTextResponse:
    """One file of the ``flwr run`` configuration as a download (the owner's, as the API
    decides; anyone else gets 404)."""
    api = Api(request)
    try:
        await _federation(api, fid)
        try:
            found = await api.get(f"/federations/{fid}/flwr-config")
        except ApiError as exc:
            if exc.status in (403, 404):
                raise HTTPException(404, NOT_FOUND) from exc
            raise
    finally:
        await api.aclose()
    field, media = FLWR_FILES[name]
    return PlainTextResponse(
        str(found.get(field, "")),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/federations/{fid}/flwr/config.toml", response_class=PlainTextResponse)
async def flwr_config(fid: FederationId, request: Request, user: CurrentUser) -> PlainTextResponse:
    """The SuperLink connection for ``flwr run`` (``$FLWR_HOME/config.toml``)."""
    return await flwr_file(fid, "config.toml", request)


@router.get("/federations/{fid}/flwr/ca.pem", response_class=PlainTextResponse)
async def flwr_ca(fid: FederationId, request: Request, user: CurrentUser) -> PlainTextResponse:
    """The federation's CA certificate, which ``config.toml`` names."""
    return await flwr_file(fid, "ca.pem", request)
