"""``POST /api/me/server/restart``: restart the caller's own server onto a booking.

Used from a CPU-only server after booking GPUs: the service (whose hub role has the
``servers`` scope) stops the server and starts it again with ``gpu: booking`` and the same
image; the home folder keeps the files. Answers 202 at once (the caller's kernel may be
inside the server being restarted); the restart runs in the background.
"""

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from werkhub.auth.hub import HubUser
from werkhub.booking.manager import BookingManager, Caller
from werkhub.service.bounds import MAX_ID
from werkhub.service.identity import current_user

log = logging.getLogger("werkhub.restart")


class RestartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_id: int = Field(ge=1, le=MAX_ID, description="your booking that holds GPUs now")


class RestartAnswer(BaseModel):
    status: str
    booking_id: int
    message: str
    server_url: str


router = APIRouter(prefix="/api/me", tags=["servers"])
User = Annotated[HubUser, Depends(current_user)]


@router.post(
    "/server/restart",
    status_code=202,
    response_model=RestartAnswer,
    summary="Restart my server onto one of my bookings",
)
async def restart(request: Request, user: User, body: RestartRequest) -> RestartAnswer:
    if user.kind != "user":
        raise HTTPException(403, "only users have servers to restart")
    m: BookingManager = request.app.state.bookings
    booking = await run_in_threadpool(
        m.get, Caller(user.name, user.admin, tuple(user.groups)), body.booking_id
    )
    if booking["user"] != user.name:
        raise HTTPException(404, f"no booking {body.booking_id}")
    current = await run_in_threadpool(m.current, user.name, body.booking_id)
    if current is None:
        if booking["state"] == "booked":
            start = booking["start"].astimezone(m.settings.tz)
            raise HTTPException(
                409,
                f"booking {body.booking_id} starts at {start:%H:%M} on {start:%Y-%m-%d}; "
                "restart onto it then",
            )
        raise HTTPException(
            409, f"booking {body.booking_id} is {booking['state']}: it holds no GPUs now"
        )
    auth = request.app.state.auth
    details = await auth.user_details(user.name) or {}
    server = (details.get("servers") or {}).get("") or {}
    options: dict[str, Any] = {}
    image = (server.get("user_options") or {}).get("image")
    if image:
        options["image"] = image
    options.update({"gpu": "booking", "booking_id": body.booking_id})
    task = asyncio.create_task(request.app.state.servers.restart(user.name, options))
    tasks = getattr(request.app.state, "restart_tasks", None)
    if tasks is None:
        tasks = request.app.state.restart_tasks = set()
    tasks.add(task)
    task.add_done_callback(lambda t: _finished(t, tasks, user.name))
    base = auth.prefix.split("services/")[0]
    return RestartAnswer(
        status="restarting",
        booking_id=body.booking_id,
        message=(
            f"Your server restarts with booking {body.booking_id} "
            f"({booking['count']} x {booking['gpu_type']}); reload the page in a minute."
        ),
        server_url=f"{base}user/{user.name}/",
    )


def _finished(task: asyncio.Task[None], tasks: set[Any], name: str) -> None:
    tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("restart of %s's server failed: %s", name, task.exception())
