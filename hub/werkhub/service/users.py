"""Deleted hub users: the service removes what they left behind, and cannot miss one.

Two ways in, one purge (:mod:`werkhub.service.user_purge` plus the MLflow account):

* ``DELETE /services/werkhub/api/admin/users/{name}``: the hub's authenticator calls it
  when an admin deletes a user (admins may call it too). It pauses, then deletes the
  user's jobs and stops their running runs, cancels their bookings and waiting list
  entries and deletes their MLflow account (their runs stay for admins).
* a reconciliation every tick (and at start): the service remembers which accounts the
  hub had (name and creation time, ``STATE/werkhub-accounts.json``). A name that is gone,
  or that the hub now shows with another creation time (deleted and created again),
  was deleted without the service being told, e.g. while it was down: it is purged
  then (for a re-created name only what the old account left).
"""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.config.paths import StatePaths
from werkhub.config.wiring import CLI_SERVICE, SPAWNER_SERVICE
from werkhub.service.identity import current_user
from werkhub.service.user_purge import (
    Purged,
    delete_jobs,
    end_bookings,
    live_owners,
    pause_jobs,
    remove_home,
    tombstone,
)

log = logging.getLogger("werkhub.service.users")
ACCOUNTS_FILE = "werkhub-accounts.json"
#: identities besides hub admins that may remove a user's data: the hub and the CLI
TRUSTED_SERVICES = frozenset({SPAWNER_SERVICE, CLI_SERVICE})

UserName = Annotated[
    str,
    PathParam(min_length=1, max_length=64, pattern=r"^[^/~]+$", description="hub user name"),
]


class PurgeOut(BaseModel):
    name: str
    moved_to: str
    jobs_deleted: list[int]
    runs_cancelled: list[int]
    runs_stopped: list[int]
    bookings_cancelled: list[int]
    bookings_released: list[int]
    waitlist_cancelled: list[int]
    endpoints_deleted: list[str] = []
    home_removed: bool
    mlflow: str


def accounts_path(app: FastAPI) -> Path:
    return app.state.env.state.root / ACCOUNTS_FILE


def load_accounts(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_accounts(path: Path, accounts: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(accounts, out, sort_keys=True)
    os.replace(tmp, path)


def epoch(iso: str) -> float | None:
    """The hub's ``created`` (ISO 8601, ``Z`` suffix) as epoch seconds."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def disable_mlflow(name: str, state: StatePaths) -> str:
    """Delete the MLflow account of ``name`` (runs and experiments stay)."""
    from werkhub.service.experiments import mlflow_admin

    try:
        async with mlflow_admin(state) as admin:
            return "deleted" if await admin.delete_user(name) else "no account"
    except HTTPException as exc:
        return f"unchanged: {exc.detail}"
    except ValueError as exc:  # the gateway's own administrator
        return f"kept: {exc}"


async def remove_files(app: FastAPI, name: str) -> bool:
    """Remove the home of deleted user ``name``: the folder of the embedded default, the
    named home volume on the Docker backend (Kubernetes keeps its volume claims to the
    cluster's admin). True when something was removed."""
    spawner = app.state.config.spawner
    if spawner.kind == "local":
        return await asyncio.to_thread(remove_home, app.state.env.state.homes, name)
    if spawner.kind != "docker":
        return False
    from werkhub.jobs.run.docker import remove_home_volume

    try:
        return await asyncio.to_thread(remove_home_volume, spawner.docker.url, name)
    except Exception as exc:  # the engine is away or refuses: the rest of the purge goes on
        log.warning("home volume of deleted user %s not removed: %s", name, exc)
        return False


async def remove_endpoints(app: FastAPI, name: str, before: float | None) -> list[str]:
    """Stop and delete the model endpoints of ``name`` (their tokens and logs with them)."""
    serving = getattr(app.state, "serving", None)
    if serving is None:
        return []
    removed = []
    for row in await asyncio.to_thread(serving.store.all):
        if row["owner"] == name and (before is None or row["created"] < before):
            await serving.supervisor.deleted(row["id"])
            await asyncio.to_thread(serving.store.remove, row["id"])
            removed.append(row["name"])
    return removed


async def purge(app: FastAPI, name: str, before: float | None = None) -> tuple[Purged, str]:
    """Remove what ``name`` left (only rows from before ``before`` if given)."""
    async with _lock(app):
        at = ledger.now_ts()
        done = Purged(name=name, tombstone=tombstone(name, at))
        scheduler = getattr(app.state, "jobs", None)
        if scheduler is not None:
            await asyncio.to_thread(pause_jobs, scheduler.store, name, before, at)
            await asyncio.to_thread(delete_jobs, scheduler.store, name, before, at, done)
            for run_id in done.runs_stopped:
                task = scheduler.tasks.get(run_id)
                if task is not None:
                    task.cancel()
            scheduler.wake()
        if before is None:
            done.home_removed = await remove_files(app, name)
        done.endpoints = await remove_endpoints(app, name, before)
        await asyncio.to_thread(end_bookings, app.state.bookings, name, before, done)
        app.state.auth.forget(name)
        mlflow = await disable_mlflow(name, app.state.env.state)
    if not done.empty:
        log.warning("removed what deleted user %s left: %s", name, done)
    return done, mlflow


def _lock(app: FastAPI, which: str = "purge_lock") -> asyncio.Lock:
    if getattr(app.state, which, None) is None:
        setattr(app.state, which, asyncio.Lock())
    return getattr(app.state, which)


def _accounts_lock(app: FastAPI) -> asyncio.Lock:
    """Serialises the reconciliation and the endpoint's bookkeeping of the accounts file."""
    return _lock(app, "accounts_lock")


async def reconcile(app: FastAPI, path: Path | None = None) -> list[str]:
    """Purge accounts the hub deleted without telling the service; returns their names."""
    path = path or accounts_path(app)
    async with _accounts_lock(app):
        # owners of live rows first, the hub's accounts after: a row's owner existed when
        # the row was written, so it is in the later list unless it was deleted since
        # (the other order took a person who signed up and booked between the two reads
        # for a deletion the service had missed)
        scheduler = getattr(app.state, "jobs", None)
        store = scheduler.store if scheduler is not None else None
        owners = await asyncio.to_thread(live_owners, store, app.state.bookings)
        current = await app.state.auth.users_created()
        known = load_accounts(path)
        missed = []
        for name, created in known.items():
            if created.startswith(PURGED):
                continue  # the service was told, and purged it (see remove_user)
            if name in current and current[name] == created:
                continue
            before = epoch(current[name]) if name in current else None
            if name in current and before is None:
                continue  # no creation time to tell the accounts apart
            await purge(app, name, before)
            missed.append(name)
        for name, oldest in owners.items():
            if name in missed:
                continue
            before = epoch(current[name]) if name in current else None
            if name in current and (before is None or oldest >= before):
                continue  # rows of the account the hub has now
            await purge(app, name, before)  # an account the service never saw in the list
            missed.append(name)
        save_accounts(path, {**current, **still_listed(known, current)})
    return missed


#: marks, in the accounts file, an account whose deletion the service was told and handled
PURGED = "purged:"


def still_listed(known: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """The handled deletions the hub still lists (it tells the service before it removes
    the account from its own list): kept marked, so that a name created again soon after is
    not taken for an account deleted behind the service's back, which would purge the new
    person's MLflow account. Once the hub lists it no more, or lists a new account under
    that name, the mark goes."""
    return {
        name: mark
        for name, mark in known.items()
        if mark.startswith(PURGED) and current.get(name) == mark[len(PURGED) :]
    }


async def reconcile_forever(app: FastAPI, interval: float) -> None:
    while True:
        try:
            missed = await reconcile(app)
            if missed:
                log.warning("deleted while the service was not told: %s", ", ".join(missed))
        except Exception:
            log.exception("checking for deleted users failed; retrying")
        await asyncio.sleep(interval)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(reconcile_forever(app, app.state.env.tick_seconds))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


router = APIRouter(prefix="/api/admin", tags=["admin"], lifespan=_lifespan)
User = Annotated[HubUser, Depends(current_user)]


@router.delete(
    "/users/{name}",
    response_model=PurgeOut,
    responses={403: {"description": "not an administrator"}},
    summary="Remove a deleted user's jobs, bookings and MLflow account",
)
async def remove_user(request: Request, user: User, name: UserName) -> PurgeOut:
    trusted = user.kind == "service" and user.name in TRUSTED_SERVICES
    if not (trusted or (user.kind == "user" and user.admin)):
        raise HTTPException(403, "Only administrators and the hub remove a user's data.")
    if user.kind == "user" and user.name == name:
        raise HTTPException(400, "You cannot remove your own account's data.")
    async with _accounts_lock(request.app):
        try:  # the hub still lists the account while it tells the service
            details = await request.app.state.auth.user_details(name)
        except httpx.HTTPError:
            details = None
        done, mlflow = await purge(request.app, name)
        path = accounts_path(request.app)
        accounts = load_accounts(path)
        # handled: the reconciliation need not (unless MLflow missed it: then it retries)
        if not mlflow.startswith("unchanged"):
            accounts.pop(name, None)
            if details and details.get("created"):
                accounts[name] = f"{PURGED}{details['created']}"
            save_accounts(path, accounts)
    return PurgeOut(
        name=name,
        moved_to=done.tombstone,
        jobs_deleted=done.jobs,
        runs_cancelled=done.runs_cancelled,
        runs_stopped=done.runs_stopped,
        bookings_cancelled=done.bookings_cancelled,
        bookings_released=done.bookings_released,
        waitlist_cancelled=done.waitlist_cancelled,
        endpoints_deleted=done.endpoints,
        home_removed=done.home_removed,
        mlflow=mlflow,
    )
