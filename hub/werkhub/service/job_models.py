"""What the jobs API takes and answers: the models of its OpenAPI document, id and group rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from werkhub.jobs.spec import JobSpec
from werkhub.service.bounds import MAX_ID

CLI_SERVICE = "werkhub-cli"
GROUP = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
#: reports are user content: shown in a sandbox (own origin, no scripts, nothing fetched)
REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:"
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="id of a job")]
RunId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="id of a run")]


class Problem(BaseModel):
    detail: str
    field: str | None = None


class JobOut(JobSpec):
    id: int
    owner: str
    paused: bool
    next_runs: list[datetime] = Field(description="the next (up to 5) scheduled times")
    created: datetime
    updated: datetime


class RunOut(BaseModel):
    id: int
    job_id: int
    job_name: str
    owner: str
    title: str
    status: str = Field(
        description="queued | waiting_gpu | running | succeeded | failed | timed_out | "
        "interrupted | cancelled"
    )
    attempt: int
    retry_of: int | None
    trigger: str = Field(description="schedule | catch_up | manual | retry")
    scheduled_for: datetime
    queued: datetime
    started: datetime | None
    finished: datetime | None
    duration_s: float | None
    error: str | None
    failed_cell: int | None
    parameters: dict[str, Any]
    mlflow_run_id: str | None
    booking_id: int | None
    timings: dict[str, Any] | None
    report_url: str | None
    log_url: str
    notebook_url: str | None


class ReportCard(BaseModel):
    run_id: int
    job_id: int
    job_name: str
    owner: str
    title: str
    status: str
    finished: datetime | None
    url: str
    shared_with: list[str]


class InspectIn(BaseModel):
    notebook: str = Field(min_length=1, max_length=500, examples=["reports/daily.ipynb"])


class ParamOut(BaseModel):
    name: str
    type: str
    default: Any


class InspectOut(BaseModel):
    parameters: list[ParamOut]


class ShareIn(BaseModel):
    group: str = Field(pattern=GROUP, description="hub group whose members may see it")


#: the error answers every jobs route documents
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": Problem} for s in (401, 403, 404, 409, 422)}
#: run-now and a "now" job queue a run: 429 when the owner's queue is full
QUEUEING: dict[int | str, dict[str, Any]] = {**ERRORS, 429: {"model": Problem}}
