"""Sharing MLflow experiments and registered models with hub groups (werkhub service API).

MLflow's own permission model does the work: each hub group is an MLflow role
(``hub-group:NAME``), a share is a READ or EDIT permission of that role on the
experiment (by id) or registered model (by name; MLflow resource type
``registered_model``), and the MLflow gateway keeps role membership equal to hub group
membership (and moves a model's shares with it when it is renamed, drops them when it
is deleted). Only the owner (MLflow MANAGE permission, given to the creator) or a hub
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
from werkhub.service.orgs import check_share
from werkhub.tracking.accounts import REGISTERED_MODEL, MlflowAdmin, MlflowAdminError
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
#: MLflow's longest registered model name (its database column)
MAX_MODEL_NAME = 256


def _model_name(value: str) -> str:
    if not value.strip():
        raise ValueError("a registered model name must not be blank")
    if "/" in value or ":" in value:
        raise ValueError(f"'{value[:80]}' is no registered model name: MLflow refuses '/' and ':'")
    return value


ModelName = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=MAX_MODEL_NAME,
        description="name of an MLflow registered model (URL-encoded), e.g. ann~classifier",
    ),
    AfterValidator(_model_name),
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


class ModelShares(BaseModel):
    name: str = Field(description="the registered model")
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


async def owned_model(admin: MlflowAdmin, user: HubUser, name: str) -> str:
    """The registered model's name if ``user`` may manage it; 404/403 otherwise."""
    if user.kind != "user":
        raise HTTPException(403, "Only hub users own MLflow registered models.")
    model = await admin.registered_model(name)
    missing = f"No registered model '{name}' (or it is not yours)."
    if model is None:
        raise HTTPException(404, missing)
    if not user.admin:
        permission = await admin.permission(user.name, name, REGISTERED_MODEL)
        if permission in ("NO_PERMISSIONS", "DENY"):
            raise HTTPException(404, missing)
        if permission != "MANAGE":
            raise HTTPException(
                403,
                f"Only the owner of registered model '{name}' or an admin can share it "
                f"(you have {permission}).",
            )
    return str(model.get("name", name))


async def group_members(request: Request, group: str, sharer: str) -> list[str]:
    """The members of the hub group a share names; 422 when there is no such group or
    it belongs to another organisation than ``sharer``'s."""
    await check_share(request, sharer, group)
    members = await request.app.state.auth.group_members(group)
    if members is None:
        raise HTTPException(422, f"group: there is no hub group named '{group}'.")
    return members


def model_owner(user: HubUser, name: str) -> str:
    """Whose organisation a registered model's shares stay in: the user of its name space
    (``ann~...``), else the one sharing it."""
    head, sep, _ = name.partition("~")
    return head if sep else user.name


def experiment_owner(user: HubUser, name: str) -> str:
    """Whose organisation an experiment's shares stay in: the user of its name space
    (``ann/...``), else the one sharing it."""
    head, sep, _ = name.partition("/")
    return head if sep else user.name


router = APIRouter(prefix="/api", tags=["mlflow"])
caller = Depends(current_user)


@router.get(
    "/experiments/{experiment_id}/shares",
    response_model=Shares,
    summary="Groups an MLflow experiment is shared with (owner or admin)",
)
async def list_shares(experiment_id: ExperimentId, state: State, user: HubUser = caller) -> Shares:
    async with mlflow_admin(state) as admin:
        name = await owned_experiment(admin, user, experiment_id)
        shares = await admin.shares(experiment_id)
    return Shares(experiment_id=experiment_id, name=name, shares=shares)


@router.post(
    "/experiments/{experiment_id}/share",
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
    async with mlflow_admin(state) as admin:
        name = await owned_experiment(admin, user, experiment_id)
        members = await group_members(request, body.group, experiment_owner(user, name))
        await admin.share(experiment_id, body.group, body.permission, members)
        shares = await admin.shares(experiment_id)
    return Shares(experiment_id=experiment_id, name=name, shares=shares)


@router.delete(
    "/experiments/{experiment_id}/share/{group}",
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


@router.get(
    "/models/{name}/shares",
    response_model=ModelShares,
    summary="Groups an MLflow registered model is shared with (owner or admin)",
)
async def list_model_shares(name: ModelName, state: State, user: HubUser = caller) -> ModelShares:
    async with mlflow_admin(state) as admin:
        name = await owned_model(admin, user, name)
        shares = await admin.shares(name, REGISTERED_MODEL)
    return ModelShares(name=name, shares=shares)


@router.post(
    "/models/{name}/share",
    response_model=ModelShares,
    summary="Share an MLflow registered model with a hub group (READ or EDIT)",
)
async def share_model(
    name: ModelName,
    body: ShareRequest,
    request: Request,
    state: State,
    user: HubUser = caller,
) -> ModelShares:
    async with mlflow_admin(state) as admin:
        name = await owned_model(admin, user, name)
        members = await group_members(request, body.group, model_owner(user, name))
        await admin.share(name, body.group, body.permission, members, REGISTERED_MODEL)
        shares = await admin.shares(name, REGISTERED_MODEL)
    return ModelShares(name=name, shares=shares)


@router.delete(
    "/models/{name}/share/{group}",
    response_model=ModelShares,
    summary="Stop sharing an MLflow registered model with a hub group",
)
async def unshare_model(
    name: ModelName, group: GroupName, state: State, user: HubUser = caller
) -> ModelShares:
    async with mlflow_admin(state) as admin:
        name = await owned_model(admin, user, name)
        if not await admin.unshare(name, group, REGISTERED_MODEL):
            raise HTTPException(
                404, f"Registered model '{name}' is not shared with group '{group}'."
            )
        shares = await admin.shares(name, REGISTERED_MODEL)
    return ModelShares(name=name, shares=shares)
