"""Sharing MLflow experiments with hub groups (werkhub service API).

MLflow's own permission model does the work: each hub group is an MLflow role
(``hub-group:NAME``), a share is a READ or EDIT permission of that role on the
experiment, and the MLflow gateway keeps role membership equal to hub group membership.
Only the experiment's owner (MLflow MANAGE permission, given to its creator) or a hub
admin may share; anyone else gets 404 (no access at all) or 403 (can see, not share).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from werkhub.auth.hub import HubUser
from werkhub.config.paths import StatePaths
from werkhub.service.bounds import MAX_ID
from werkhub.service.deps import State
from werkhub.service.identity import current_user
from werkhub.tracking.accounts import MlflowAdmin, MlflowAdminError
from werkhub.tracking.identity import GatewaySecrets


def _fits_64_bits(value: str) -> str:
    if int(value) > MAX_ID:
        raise ValueError(f"{value} is not an MLflow experiment id (at most {MAX_ID})")
    return value


ExperimentId = Annotated[
    str,
    PathParam(pattern=r"^\d{1,19}$", description="MLflow experiment id (a number, e.g. 3)"),
    AfterValidator(_fits_64_bits),
]
GroupName = Annotated[
    str,
    PathParam(min_length=1, max_length=255, description="name of a hub group"),
]


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1, max_length=255, description="name of a hub group")
    permission: Literal["READ", "EDIT"] = Field(
        default="READ", description="READ: see runs and artifacts; EDIT: also log and change"
    )


class Shares(BaseModel):
    experiment_id: str
    name: str
    shares: dict[str, str] = Field(description="group -> permission (READ or EDIT)")


@asynccontextmanager
async def mlflow_admin(state: StatePaths) -> AsyncIterator[MlflowAdmin]:
    """The private MLflow server as its administrator (address left by the gateway)."""
    try:
        address = json.loads((state.mlflow / "internal.json").read_text())
        keys = GatewaySecrets.load(state.secrets)
    except (OSError, ValueError, KeyError):
        raise HTTPException(
            503, "MLflow is not running here (disabled or still starting)."
        ) from None
    admin = MlflowAdmin(address["url"] + address["prefix"], keys)
    try:
        yield admin
    except (MlflowAdminError, httpx.HTTPError) as exc:
        raise HTTPException(502, f"MLflow did not take the change: {exc}") from None
    finally:
        await admin.aclose()


async def owned_experiment(admin: MlflowAdmin, user: HubUser, experiment_id: str) -> str:
    """The experiment's name if ``user`` may manage it; 404/403 otherwise."""
    if user.kind != "user":
        raise HTTPException(403, "Only hub users own MLflow experiments.")
    experiment = await admin.experiment(experiment_id)
    missing = f"No MLflow experiment {experiment_id} (or it is not yours)."
    if experiment is None:
        raise HTTPException(404, missing)
    if not user.admin:
        permission = await admin.permission(user.name, experiment_id)
        if permission in ("NO_PERMISSIONS", "DENY"):
            raise HTTPException(404, missing)
        if permission != "MANAGE":
            raise HTTPException(
                403,
                f"Only the owner of experiment {experiment_id} or an admin can share it "
                f"(you have {permission}).",
            )
    return str(experiment.get("name", ""))


router = APIRouter(prefix="/api/experiments", tags=["mlflow"])
caller = Depends(current_user)


@router.get(
    "/{experiment_id}/shares",
    response_model=Shares,
    summary="Groups an MLflow experiment is shared with (owner or admin)",
)
async def list_shares(experiment_id: ExperimentId, state: State, user: HubUser = caller) -> Shares:
    async with mlflow_admin(state) as admin:
        name = await owned_experiment(admin, user, experiment_id)
        shares = await admin.shares(experiment_id)
    return Shares(experiment_id=experiment_id, name=name, shares=shares)


@router.post(
    "/{experiment_id}/share",
    response_model=Shares,
    summary="Share an MLflow experiment with a hub group (READ or EDIT)",
)
async def share(
    experiment_id: ExperimentId,
    body: ShareRequest,
    request: Request,
    state: State,
    user: HubUser = caller,
) -> Shares:
    members = await request.app.state.auth.group_members(body.group)
    if members is None:
        raise HTTPException(422, f"group: there is no hub group named '{body.group}'.")
    async with mlflow_admin(state) as admin:
        name = await owned_experiment(admin, user, experiment_id)
        await admin.share(experiment_id, body.group, body.permission, members)
        shares = await admin.shares(experiment_id)
    return Shares(experiment_id=experiment_id, name=name, shares=shares)


@router.delete(
    "/{experiment_id}/share/{group}",
    response_model=Shares,
    summary="Stop sharing an MLflow experiment with a hub group",
)
async def unshare(
    experiment_id: ExperimentId, group: GroupName, state: State, user: HubUser = caller
) -> Shares:
    async with mlflow_admin(state) as admin:
        name = await owned_experiment(admin, user, experiment_id)
        if not await admin.unshare(experiment_id, group):
            raise HTTPException(
                404, f"Experiment {experiment_id} is not shared with group '{group}'."
            )
        shares = await admin.shares(experiment_id)
    return Shares(experiment_id=experiment_id, name=name, shares=shares)
