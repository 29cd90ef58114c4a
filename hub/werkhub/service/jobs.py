"""HTTP API of scheduled jobs, runs and the report gallery under /services/werkhub/api.

Every definition is validated before anything is stored: the schema (``JobSpec``), the
notebook path (inside the owner's home, no symlinks), the parameters against the
notebook's ``parameters`` cell, the GPU type against the inventory. A refusal answers
422 (or 409 for a duplicate name) with ``detail`` naming the field, and writes nothing.
Others' jobs, runs and reports answer 404; administrators see everything. The models are
in ``job_models``, the checks and answer builders in ``job_support``.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.jobs.cron import Cron, zone
from werkhub.jobs.errors import SpecError
from werkhub.jobs.planning import first_fire, ts
from werkhub.jobs.scheduler import Scheduler
from werkhub.jobs.spec import JobSpec
from werkhub.service.deps import ApiBase
from werkhub.service.identity import CurrentUser
from werkhub.service.job_models import (
    ERRORS,
    GROUP,
    QUEUEING,
    REPORT_CSP,
    InspectIn,
    InspectOut,
    JobId,
    JobOut,
    ParamOut,
    ReportCard,
    RunId,
    RunOut,
    ShareIn,
)
from werkhub.service.job_support import (
    Sched,
    SpecRoute,
    checked,
    job_out,
    owner_of,
    read_notebook,
    report_cards,
    run_file,
    run_out,
    spec_of,
    stored,
    viewer_of,
)
from werkhub.service.orgs import check_share

router = APIRouter(prefix="/api", tags=["jobs"], route_class=SpecRoute)


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    responses=QUEUEING,
    summary="Create a job (validated against the notebook's parameters)",
)
async def create(s: Sched, user: CurrentUser, spec: JobSpec) -> JobOut:
    owner = owner_of(user)
    raw = spec.model_dump(mode="json", exclude_unset=True)
    full = await run_in_threadpool(checked, s, owner, raw)
    now = ledger.utcnow()
    job = await run_in_threadpool(
        s.store.create_job, owner, stored(full), first_fire(full, now), ts(now)
    )
    s.wake()
    return job_out(job)


@router.get(
    "/jobs",
    response_model=list[JobOut],
    responses=ERRORS,
    summary="Own jobs (admins: everyone's with all=true)",
)
async def list_jobs(s: Sched, user: CurrentUser, all: bool = False) -> list[JobOut]:
    jobs = await run_in_threadpool(s.store.list_jobs, viewer_of(user), all)
    return [job_out(j) for j in jobs]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS, summary="One job")
async def get_job(s: Sched, user: CurrentUser, job_id: JobId) -> JobOut:
    return job_out(await run_in_threadpool(s.store.get_job, viewer_of(user), job_id))


@router.patch(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=ERRORS,
    summary="Change a job: the given top-level fields replace the stored ones",
)
async def change(
    s: Sched, user: CurrentUser, job_id: JobId, body: Annotated[dict[str, Any], Body()]
) -> JobOut:
    viewer = viewer_of(user)
    job = await run_in_threadpool(s.store.get_job, viewer, job_id)
    current = {k: job[k] for k in JobSpec.model_fields if k in job}
    unknown = sorted(set(body) - set(JobSpec.model_fields))
    if unknown:
        raise SpecError(unknown[0], "unknown field (not allowed here)")
    merged = {**current, **body}
    if "notebook" in body and body["notebook"] is not None:
        merged["template"] = None
    if "template" in body and body["template"] is not None:
        merged["notebook"] = None
    full = await run_in_threadpool(checked, s, job["owner"], merged)
    now = ledger.utcnow()
    job = await run_in_threadpool(
        s.store.update_job, viewer, job_id, stored(full), first_fire(full, now), ts(now)
    )
    s.wake()
    return job_out(job)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    responses=ERRORS,
    summary="Delete a job; its runs and reports stay, queued runs are cancelled",
)
async def delete(s: Sched, user: CurrentUser, job_id: JobId) -> Response:
    running = await run_in_threadpool(
        s.store.delete_job, viewer_of(user), job_id, ts(ledger.utcnow())
    )
    for run_id in running:
        task = s.tasks.get(run_id)
        if task is not None:
            task.cancel()
    return Response(status_code=204)


async def pause_or_resume(s: Scheduler, user: HubUser, job_id: int, paused: bool) -> JobOut:
    viewer = viewer_of(user)
    job = await run_in_threadpool(s.store.get_job, viewer, job_id)
    spec = spec_of(job)
    now = ledger.utcnow()
    job = await run_in_threadpool(
        s.store.set_paused, viewer, job_id, paused, first_fire(spec, now), ts(now)
    )
    s.wake()
    return job_out(job)


@router.post(
    "/jobs/{job_id}/pause",
    response_model=JobOut,
    responses=ERRORS,
    summary="Pause the schedule (a running run finishes)",
)
async def pause(s: Sched, user: CurrentUser, job_id: JobId) -> JobOut:
    return await pause_or_resume(s, user, job_id, True)


@router.post(
    "/jobs/{job_id}/resume",
    response_model=JobOut,
    responses=ERRORS,
    summary="Resume the schedule from now (missed times are not caught up)",
)
async def resume(s: Sched, user: CurrentUser, job_id: JobId) -> JobOut:
    return await pause_or_resume(s, user, job_id, False)


@router.post(
    "/jobs/{job_id}/run",
    status_code=202,
    response_model=RunOut,
    responses=QUEUEING,
    summary="Queue a run now (also for a paused job); 429 when too many wait",
)
async def run_now(s: Sched, user: CurrentUser, api: ApiBase, job_id: JobId) -> RunOut:
    run = await run_in_threadpool(s.store.run_now, viewer_of(user), job_id, ts(ledger.utcnow()))
    s.wake()
    return run_out(run, api)


@router.get(
    "/jobs/{job_id}/runs",
    response_model=list[RunOut],
    responses=ERRORS,
    summary="Runs of a job, newest first",
)
async def runs(
    s: Sched,
    user: CurrentUser,
    api: ApiBase,
    job_id: JobId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunOut]:
    found = await run_in_threadpool(s.store.list_runs, viewer_of(user), job_id, limit)
    return [run_out(r, api) for r in found]


@router.get("/runs/{run_id}", response_model=RunOut, responses=ERRORS, summary="One run")
async def get_run(s: Sched, user: CurrentUser, api: ApiBase, run_id: RunId) -> RunOut:
    return run_out(await run_in_threadpool(s.store.get_run, viewer_of(user), run_id), api)


@router.get(
    "/runs/{run_id}/log",
    response_class=PlainTextResponse,
    responses=ERRORS,
    summary="The run's log (runner output), as text",
)
async def run_log(s: Sched, user: CurrentUser, run_id: RunId) -> PlainTextResponse:
    run = await run_in_threadpool(s.store.get_run, viewer_of(user), run_id)
    path = Path(run["out_dir"]) / "log.txt"
    text = path.read_text(errors="replace") if path.is_file() else ""
    return PlainTextResponse(text)


@router.get(
    "/runs/{run_id}/notebook",
    responses=ERRORS,
    summary="The output notebook (kept also when the run failed)",
)
async def run_notebook(s: Sched, user: CurrentUser, run_id: RunId) -> FileResponse:
    path = await run_in_threadpool(run_file, s, user, run_id, "output.ipynb", False)
    return FileResponse(path, media_type="application/x-ipynb+json", filename=f"run-{run_id}.ipynb")


@router.get(
    "/reports",
    response_model=list[ReportCard],
    responses=ERRORS,
    summary="Report gallery: own and shared with my groups (admins: all), newest first",
)
async def reports(s: Sched, user: CurrentUser, api: ApiBase) -> list[ReportCard]:
    found = await run_in_threadpool(s.store.reports, viewer_of(user))
    return report_cards(found, api)


@router.get(
    "/reports/{run_id}",
    response_class=HTMLResponse,
    responses=ERRORS,
    summary="A run's HTML report (self-contained; shown sandboxed)",
)
async def report(s: Sched, user: CurrentUser, run_id: RunId) -> Response:
    path = await run_in_threadpool(run_file, s, user, run_id, "report.html", True)
    return FileResponse(
        path,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"},
    )


@router.post(
    "/reports/{run_id}/share",
    responses=ERRORS,
    summary="Share a report with a group (owner or admin)",
)
async def share(
    s: Sched, user: CurrentUser, run_id: RunId, body: ShareIn, request: Request
) -> dict[str, Any]:
    run = await run_in_threadpool(s.store.get_run, viewer_of(user), run_id)
    await check_share(request, run["owner"], body.group)
    groups = await run_in_threadpool(
        s.store.share, viewer_of(user), run_id, body.group, ts(ledger.utcnow())
    )
    return {"run_id": run_id, "shared_with": groups}


@router.delete(
    "/reports/{run_id}/share/{group}",
    responses=ERRORS,
    summary="Stop sharing a report with a group",
)
async def unshare(
    s: Sched, user: CurrentUser, run_id: RunId, group: Annotated[str, PathParam(max_length=64)]
) -> dict[str, Any]:
    if not re.match(GROUP, group):
        raise SpecError("group", "not a group name")
    groups = await run_in_threadpool(s.store.unshare, viewer_of(user), run_id, group)
    return {"run_id": run_id, "shared_with": groups}


@router.post(
    "/jobs/inspect",
    response_model=InspectOut,
    responses=ERRORS,
    summary="Parameters of a notebook in my home (for job forms)",
)
async def inspect(s: Sched, user: CurrentUser, body: InspectIn) -> InspectOut:
    from werkhub.jobs.params import parameters_of

    home = s.backend.homes / owner_of(user)
    notebook = await run_in_threadpool(read_notebook, home, body.notebook)
    found = parameters_of(notebook)
    return InspectOut(
        parameters=[ParamOut(name=p.name, type=p.type, default=p.default) for p in found.values()]
    )


@router.get(
    "/cron/preview",
    responses=ERRORS,
    summary="The next 5 times of a cron expression in a time zone",
)
async def preview(
    user: CurrentUser,
    cron: Annotated[str, Query(max_length=200, examples=["0 6 * * 1-5"])],
    tz: Annotated[str, Query(max_length=64)] = "Europe/Berlin",
) -> dict[str, list[datetime]]:
    parsed = Cron.parse(cron)
    return {"next": parsed.next_fires(ledger.utcnow(), zone(tz, "tz"), 5)}
