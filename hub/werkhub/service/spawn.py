"""Endpoints the hub's spawner calls before and after starting a server.

Only the hub's own ``werkhub-spawner`` identity may call them: they decide which GPUs a
user's server gets, so users must not reach them directly.
"""

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError, NotFound
from werkhub.booking.manager import BookingManager, Caller
from werkhub.config.wiring import SPAWNER_SERVICE
from werkhub.service.bounds import MAX_ID
from werkhub.service.identity import current_user

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class PrepareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(pattern=NAME)
    gpu: Literal["auto", "booking", "on_demand", "cpu"]
    booking_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    gpu_type: str | None = Field(default=None, max_length=96)
    count: int = Field(default=1, ge=1, le=64)
    duration_minutes: int = Field(default=60, ge=1, le=24 * 60)


class BookingRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_id: int = Field(ge=1, le=MAX_ID)


def device_details(inventory: dict[str, Any], unit_ids: list[str]) -> list[dict[str, Any]]:
    """Node, index, UUID, model and MIG slice of each booked unit, from the inventory."""
    units = {u["id"]: u for u in inventory["units"]}
    devices = {
        (node["name"], dev["index"]): dev for node in inventory["nodes"] for dev in node["devices"]
    }
    details = []
    for unit_id in unit_ids:
        unit = units[unit_id]
        parts = unit_id.split("/")
        index = int(parts[1])
        device = devices[(unit["node"], index)]
        mig = None
        if len(parts) == 3:
            profile, _, slot = parts[2].rpartition("-")
            mig = {"profile": profile, "slice": int(slot)}
        details.append(
            {
                "unit": unit_id,
                "node": unit["node"],
                "index": index,
                "uuid": device.get("uuid", ""),
                "model": device["model"],
                "memory_gb": device["memory_gb"],
                "mig": mig,
                "simulated": unit["simulated"],
            }
        )
    return details


router = APIRouter(prefix="/api/spawn", tags=["spawn (hub only)"])


async def spawner_only(user: Annotated[HubUser, Depends(current_user)]) -> HubUser:
    if user.kind != "service" or user.name != SPAWNER_SERVICE:
        raise HTTPException(403, "only the hub's spawner may call this endpoint")
    return user


Spawner = Annotated[HubUser, Depends(spawner_only)]


async def manager(request: Request) -> BookingManager:
    return request.app.state.bookings


Manager = Annotated[BookingManager, Depends(manager)]


@router.post("/prepare", summary="Decide the GPUs of a server that is about to start")
async def prepare(request: Request, m: Manager, _: Spawner, body: PrepareRequest) -> dict[str, Any]:
    if body.gpu == "cpu":
        await run_in_threadpool(m.mark_cpu_server, body.user)
        return {"booking": None, "devices": [], "message": "CPU only: no GPUs"}
    if body.gpu == "on_demand":
        if not body.gpu_type:
            raise HTTPException(422, "on-demand GPUs need a gpu_type")
        details = await request.app.state.auth.user_details(body.user)
        if details is None:
            raise HTTPException(404, f"no user '{body.user}'")
        booking, _ = await run_in_threadpool(
            m.create,
            Caller(SPAWNER_SERVICE, admin=True),
            body.user,
            tuple(details.get("groups") or []),
            body.gpu_type,
            body.count,
            None,
            None,
            timedelta(minutes=body.duration_minutes),
        )
    else:
        booking = await run_in_threadpool(m.current, body.user, body.booking_id)
        if booking is None and body.gpu == "auto" and body.booking_id is None:
            await run_in_threadpool(m.mark_cpu_server, body.user)
            return {
                "booking": None,
                "devices": [],
                "message": "No GPU booking running now: starting CPU only",
            }
        if booking is None:
            upcoming = await run_in_threadpool(m.next_for, body.user)
            if body.booking_id is not None:
                raise LedgerError(
                    "invalid",
                    f"booking {body.booking_id} is not yours or not running now",
                    field="booking_id",
                )
            if upcoming is not None:
                start = upcoming["start"].astimezone(m.settings.tz)
                raise LedgerError(
                    "state",
                    f"your next booking starts at {start:%H:%M} "
                    f"on {start:%Y-%m-%d}; start a CPU-only server until "
                    "then",
                )
            raise LedgerError(
                "state",
                "you have no GPU booking running now: book GPUs "
                "first, choose on-demand if free, or start CPU only",
            )
    devices = device_details(request.app.state.inventory, booking["devices"])
    end = booking["end"].astimezone(m.settings.tz)
    message = f"Booking {booking['count']} x {booking['gpu_type']} until {end:%H:%M} confirmed" + (
        " (simulated GPUs)" if booking["simulated"] else ""
    )
    # the spawn form shows the end as people read it: local time, not UTC
    local = {**booking, "end_local": f"{end:%a %d %b %H:%M} ({m.settings.tz.key})"}
    return {"booking": local, "devices": devices, "message": message}


@router.get("/free", summary="Free units of each GPU type right now")
async def free(m: Manager, _: Spawner) -> dict[str, int]:
    now = ledger.utcnow()
    result = {}
    for gpu_type in m.settings.gpu_types:
        steps = await run_in_threadpool(
            m.availability, gpu_type, now, now + timedelta(minutes=1), timedelta(minutes=1)
        )
        result[gpu_type] = steps[0]["free"]
    return result


@router.post("/started", summary="The server runs with its booking's devices")
async def started(m: Manager, _: Spawner, body: BookingRef) -> dict[str, Any]:
    return await run_in_threadpool(m.mark_started, body.booking_id)


@router.post("/stopped", summary="The server with this booking stopped")
async def stopped(m: Manager, _: Spawner, body: BookingRef) -> dict[str, str]:
    try:
        await run_in_threadpool(m.mark_stopped, body.booking_id)
    except NotFound:
        raise HTTPException(404, f"no booking {body.booking_id}") from None
    return {"status": "ok"}
