"""HTTP API of the booking ledger: /services/werkhub/api/{gpus,availability,bookings,...}."""

import hashlib
import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError
from werkhub.booking.manager import BookingManager, Caller
from werkhub.booking.rows import iso_steps
from werkhub.service import slurm_sync
from werkhub.service.bounds import MAX_ID, Id, Moment, in_years
from werkhub.service.gates import LedgerGates, WriteBatches
from werkhub.service.identity import current_user

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
GpuType = Annotated[str, Query(min_length=1, max_length=96, examples=["H100"])]
BookingId = Annotated[int, Path(ge=1, le=MAX_ID, description="id of a booking")]
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="id of a waitlist entry")]
At = Annotated[Moment, Query(description="ISO 8601 with offset, years 2000-2200")]


class BookingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu_type: str = Field(min_length=1, max_length=96, examples=["H100"])
    count: int = Field(ge=1, le=64)
    start: AwareDatetime | Literal["now"] = Field(
        description='ISO 8601 with offset (years 2000-2200), or "now" for on-demand '
        "(only if free now)"
    )
    end: Moment | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=31 * 24 * 60)
    user: str | None = Field(default=None, pattern=NAME, description="admins: book for a user")
    override_policy: bool = Field(default=False, description="admins: ignore policy limits")
    waitlist: bool = Field(default=False, description="queue the request if it cannot be met")
    latest_start: Moment | None = Field(
        default=None, description="with waitlist: the latest acceptable start"
    )

    @field_validator("start")
    @classmethod
    def _start_in_range(cls, value: datetime | str) -> datetime | str:
        return value if isinstance(value, str) else in_years(value)

    @model_validator(mode="after")
    def _one_end(self) -> Self:
        if (self.end is None) == (self.duration_minutes is None):
            raise ValueError("give either end or duration_minutes")
        if self.waitlist and self.latest_start is None:
            raise ValueError("a waitlist request needs latest_start")
        return self


class BookingChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Moment | None = None
    end: Moment | None = None
    override_policy: bool = False

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.start is None and self.end is None:
            raise ValueError("give a new start and/or end")
        return self


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]


class BookingOut(BaseModel):
    id: int
    user: str
    gpu_type: str
    count: int
    start: datetime
    end: datetime
    booked_end: datetime
    start_local: str
    end_local: str
    time_zone: str
    state: str
    kind: str = Field(
        default="server",
        description="server (a person's), job (a scheduled run's) or endpoint (a model server's)",
    )
    borrowed: bool = Field(
        default=False,
        description="beyond the owner's organisation's guarantee: reclaimable with a warning",
    )
    devices: list[str]
    simulated: bool
    created: datetime
    updated: datetime
    created_by: str
    audit: list[AuditEntry]


class WaitEntryOut(BaseModel):
    id: int
    user: str
    gpu_type: str
    count: int
    duration_minutes: int
    not_before: datetime
    latest_start: datetime
    state: str
    booking_id: int | None
    created: datetime


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Id] | None = Field(
        default=None, max_length=500, description="these notifications (all must be yours)"
    )
    all: bool = Field(default=False, description="every unread notification of yours")

    @model_validator(mode="after")
    def _one_choice(self) -> Self:
        if self.all == (self.ids is not None):
            raise ValueError('give either "ids" (a list of notification ids) or "all": true')
        if self.ids is not None and not self.ids:
            raise ValueError('"ids" is empty: name at least one notification')
        return self


class Problem(BaseModel):
    detail: str


router = APIRouter(prefix="/api", tags=["booking"])
User = Annotated[HubUser, Depends(current_user)]
errors: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem},
    422: {"model": Problem},
}


async def manager(request: Request) -> BookingManager:
    return request.app.state.bookings


Manager = Annotated[BookingManager, Depends(manager)]


async def gates(request: Request) -> LedgerGates:
    return request.app.state.gates


Gates = Annotated[LedgerGates, Depends(gates)]


async def batches(request: Request) -> WriteBatches:
    return request.app.state.batches


Batches = Annotated[WriteBatches, Depends(batches)]


def caller(user: HubUser) -> Caller:
    if user.kind != "user":
        raise HTTPException(403, "services cannot hold bookings")
    return Caller(user.name, user.admin, tuple(user.groups))


def out(m: BookingManager, booking: dict[str, Any]) -> dict[str, Any]:
    tz = m.settings.tz
    return {
        **booking,
        "start_local": booking["start"].astimezone(tz).isoformat(),
        "end_local": booking["end"].astimezone(tz).isoformat(),
        "time_zone": tz.key,
    }


async def groups_of(request: Request, me: Caller, name: str) -> tuple[str, ...]:
    if name == me.name:
        return me.groups
    details = await request.app.state.auth.user_details(name)
    if details is None:
        raise HTTPException(404, f"no user '{name}'")
    return tuple(details.get("groups") or [])


@router.get("/gpus", summary="GPU inventory and bookable types")
async def gpus(request: Request, user: User) -> dict[str, Any]:
    return request.app.state.inventory


@router.get(
    "/availability",
    response_model=dict[str, Any],
    summary="Free units per time step",
    responses=errors,
)
async def availability(
    m: Manager,
    g: Gates,
    user: User,
    gpu_type: GpuType,
    start: At,
    end: At,
    step: Annotated[int, Query(ge=1, le=7 * 24 * 60, description="minutes")] = 60,
) -> Response:
    every = timedelta(minutes=step)
    # in the event loop when the type's occupancy answers at once (about 0.1 ms): handing
    # that to a worker thread cost more than the answer, and the thread then waited for
    # the interpreter lock behind the loop; otherwise queued for a thread like every call
    answer = m.free_steps_at_once(gpu_type, start, end, every)
    if answer is None:
        answer = await g.read(m.free_steps, gpu_type, start, end, every)
    lo, minutes, free = answer
    # rendered here: FastAPI's generic encoder took longer than the query for a week of hours
    starts = iso_steps(lo, minutes, len(free))
    rendered = ",".join(
        f'{{"start":"{at}","free":{n}}}' for at, n in zip(starts, free, strict=True)
    )
    body = f'{{"gpu_type":{json.dumps(gpu_type)},"step_minutes":{step},"steps":[{rendered}]}}'
    return Response(body, media_type="application/json")


@router.post(
    "/bookings",
    status_code=201,
    response_model=BookingOut | WaitEntryOut,
    summary="Book GPUs (or queue on the waitlist)",
    responses={
        200: {"model": BookingOut, "description": "replayed (Idempotency-Key)"},
        202: {"model": WaitEntryOut, "description": "queued on the waitlist"},
        **errors,
    },
)
async def create(
    request: Request,
    response: Response,
    m: Manager,
    g: Gates,
    together: Batches,
    user: User,
    body: BookingCreate,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> Any:
    me = caller(user)
    owner = body.user or me.name
    groups = await groups_of(request, me, owner)
    start = None if body.start == "now" else body.start
    duration = timedelta(minutes=body.duration_minutes) if body.duration_minutes else None
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    try:
        # creates that arrive while the ledger is busy share one commit (service/gates.py)
        booking, replayed = await together.write(
            m.create,
            me,
            owner,
            groups,
            body.gpu_type,
            body.count,
            start,
            body.end,
            duration,
            key=idempotency_key,
            request_hash=digest,
            override=body.override_policy,
        )
    except LedgerError as exc:
        if exc.kind != "conflict" or not body.waitlist:
            raise
        assert body.latest_start is not None
        begin = start or ledger.utcnow().astimezone(body.latest_start.tzinfo)
        length = duration or (body.end - begin if body.end else timedelta(hours=1))
        entry = await g.write(
            m.enqueue,
            me,
            owner,
            body.gpu_type,
            body.count,
            begin,
            length,
            body.latest_start,
            groups,
        )
        response.status_code = 202
        return entry
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:  # whole Slurm nodes: held before the answer (refused: withdrawn, 4xx)
        await slurm_sync.hold_created(request.app, booking)
    return out(m, booking)


@router.get(
    "/bookings",
    response_model=list[BookingOut],
    responses=errors,
    summary="Own bookings (admins: everyone's, with filters)",
)
async def list_bookings(
    m: Manager,
    user: User,
    owner: Annotated[str | None, Query(alias="user", pattern=NAME)] = None,
    state: Literal["booked", "active", "ended", "cancelled", "released", "no_show"] | None = None,
    gpu_type: Annotated[str | None, Query(max_length=96)] = None,
    start: Annotated[Moment | None, Query()] = None,
    end: Annotated[Moment | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[dict[str, Any]]:
    found = await run_in_threadpool(
        m.list,
        caller(user),
        user=owner,
        state=state,
        gpu_type=gpu_type,
        start=start,
        end=end,
        limit=limit,
        offset=offset,
    )
    return [out(m, b) for b in found]


@router.get("/bookings/{booking_id}", response_model=BookingOut, responses=errors)
async def get_booking(m: Manager, g: Gates, user: User, booking_id: BookingId) -> dict[str, Any]:
    return out(m, await g.read(m.get, caller(user), booking_id))


@router.patch(
    "/bookings/{booking_id}",
    response_model=BookingOut,
    responses=errors,
    summary="Extend, shorten or move a booking",
)
async def change_booking(
    request: Request, m: Manager, g: Gates, user: User, booking_id: BookingId, body: BookingChange
) -> dict[str, Any]:
    me = caller(user)
    current = await g.read(m.get, me, booking_id)
    groups = await groups_of(request, me, current["user"])
    changed = await g.write(
        m.change,
        me,
        booking_id,
        groups,
        start=body.start,
        end=body.end,
        override=body.override_policy,
    )
    slurm_sync.kick(request.app)
    return out(m, changed)


@router.delete(
    "/bookings/{booking_id}",
    response_model=BookingOut,
    responses=errors,
    summary="Cancel a booking before it starts",
)
async def cancel_booking(
    request: Request, m: Manager, g: Gates, user: User, booking_id: BookingId
) -> dict[str, Any]:
    cancelled = await g.write(m.cancel, caller(user), booking_id)
    slurm_sync.kick(request.app)
    return out(m, cancelled)


@router.post(
    "/bookings/{booking_id}/release",
    response_model=BookingOut,
    responses=errors,
    summary="Give a running booking's GPUs back early",
)
async def release_booking(
    request: Request, m: Manager, g: Gates, user: User, booking_id: BookingId
) -> dict[str, Any]:
    released = await g.write(m.release, caller(user), booking_id)
    slurm_sync.kick(request.app)
    return out(m, released)


@router.get("/waitlist", response_model=list[WaitEntryOut], responses=errors)
async def list_waitlist(
    m: Manager,
    user: User,
    owner: Annotated[str | None, Query(alias="user", pattern=NAME)] = None,
) -> list[dict[str, Any]]:
    return await run_in_threadpool(m.waitlist, caller(user), owner)


@router.delete("/waitlist/{entry_id}", response_model=WaitEntryOut, responses=errors)
async def cancel_wait(m: Manager, user: User, entry_id: EntryId) -> dict[str, Any]:
    return await run_in_threadpool(m.cancel_wait, caller(user), entry_id)


@router.get("/quota", responses=errors, summary="Own policy and remaining GPU-hours")
async def quota(m: Manager, user: User) -> dict[str, Any]:
    me = caller(user)
    return await run_in_threadpool(m.quota, me.name, me.groups)


@router.get("/policies", responses=errors, summary="Configured policies (admins)")
async def policies(m: Manager, user: User) -> dict[str, Any]:
    if not caller(user).admin:
        raise HTTPException(403, "only administrators see all policies")
    return m.settings.policies.model_dump()


@router.get("/notifications", responses=errors, summary="Own notifications, newest first")
async def notes(m: Manager, user: User, unread: bool = False) -> list[dict[str, Any]]:
    return await run_in_threadpool(m.notifications, caller(user).name, unread)


@router.post(
    "/notifications/read",
    responses=errors,
    summary="Mark own notifications read (by id, or all); read ones leave the pages",
)
async def mark_read(m: Manager, user: User, body: MarkRead) -> dict[str, int]:
    changed = await run_in_threadpool(m.mark_read, caller(user).name, body.ids)
    return {"marked": changed}


@router.get(
    "/usage",
    responses=errors,
    summary="GPU-hours booked, used and released (admins: everyone, by group)",
)
async def usage(
    request: Request,
    m: Manager,
    user: User,
    start: At,
    end: At,
    owner: Annotated[str | None, Query(alias="user", pattern=NAME)] = None,
) -> dict[str, Any]:
    me = caller(user)
    if end <= start:
        raise HTTPException(422, "end must be after start")
    if not me.admin:
        if owner not in (None, me.name):
            raise HTTPException(403, "only administrators see other users' usage")
        owner = me.name
    per_user = await run_in_threadpool(m.usage, start, end, owner)
    per_group: dict[str, dict[str, float]] = {}
    if me.admin:
        for name, totals in per_user.items():
            details = await request.app.state.auth.user_details(name) or {}
            for group in details.get("groups") or []:
                acc = per_group.setdefault(group, {"booked": 0.0, "used": 0.0, "released": 0.0})
                for key, value in totals.items():
                    acc[key] = round(acc[key] + value, 4)
    return {
        "start": start,
        "end": end,
        "unit": "GPU-hours",
        "users": per_user,
        "groups": per_group,
    }
