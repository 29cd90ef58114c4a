"""HTTP API of scheduled jobs, runs and the report gallery under /services/werkhub/api.

Every definition is validated before anything is stored: the schema (``JobSpec``), the
notebook path (inside the owner's home, no symlinks), the parameters against the
notebook's ``parameters`` cell, the GPU type against the inventory. A refusal answers
422 (or 409 for a duplicate name) with ``detail`` naming the field, and writes nothing.
Others' jobs, runs and reports answer 404; administrators see everything.
"""

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.jobs.errors import JobError
from werkhub.jobs.planning import dt, first_fire, ts
from werkhub.jobs.scheduler import Scheduler
from werkhub.jobs.spec import JobSpec, SpecError, parse_spec, spec_error
from werkhub.jobs.store import Viewer
from werkhub.service.bounds import MAX_ID

CLI_SERVICE = "werkhub-cli"
GROUP = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
#: reports are user content: shown in a sandbox (own origin, no scripts, nothing fetched)
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="id of a job")]
RunId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="id of a run")]
REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:"


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


class _Errors:
    """Adapts FastAPI's validation errors to ``spec_error`` (body prefix removed)."""

    def __init__(self, exc: RequestValidationError) -> None:
        self._errors = [
            {**e, "loc": tuple(p for p in e.get("loc", ()) if p != "body")} for e in exc.errors()
        ]

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


class SpecRoute(APIRoute):
    """Validation errors of a job definition answer with the field path and the rule."""

    def get_route_handler(self) -> Any:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except RequestValidationError as exc:
                err = spec_error(_Errors(exc))  # type: ignore[arg-type]
                return refusal(422, f"{err.field}: {err.message}", err.field)
            except SpecError as exc:
                return refusal(422, f"{exc.field}: {exc.message}", exc.field)
            except JobError as exc:
                return refusal(exc.status, exc.message, exc.field)

        return handler


def refusal(status: int, detail: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status)


def viewer_of(user: HubUser) -> Viewer:
    if user.kind == "service":
        return Viewer(name=f"service:{user.name}", admin=user.name == CLI_SERVICE)
    return Viewer(name=user.name, admin=user.admin, groups=tuple(user.groups))


def build_jobs_router(prefix: str, current_user: Any) -> APIRouter:
    router = APIRouter(prefix=f"{prefix}/api", tags=["jobs"], route_class=SpecRoute)
    User = Annotated[HubUser, Depends(current_user)]
    errors: dict[int | str, dict[str, Any]] = {
        s: {"model": Problem} for s in (401, 403, 404, 409, 422)
    }
    #: run-now and a "now" job queue a run: 429 when the owner's queue is full
    queueing = {**errors, 429: {"model": Problem}}

    def sched(request: Request) -> Scheduler:
        scheduler = getattr(request.app.state, "jobs", None)
        if scheduler is None:
            raise HTTPException(503, "jobs are disabled (jobs.enabled: false in werkhub.yaml)")
        return scheduler

    Sched = Annotated[Scheduler, Depends(sched)]

    def owner_of(user: HubUser) -> str:
        if user.kind == "service":
            raise JobError("jobs belong to users: use a user's hub token", "owner")
        return user.name

    def link(request: Request, path: str) -> str:
        return f"{prefix}/api/{path}"

    def job_out(job: dict[str, Any]) -> JobOut:
        spec = JobSpec.model_validate({k: job[k] for k in JobSpec.model_fields if k in job})
        upcoming = []
        if not job["paused"] and job["next_fire"] is not None:
            upcoming = [dt(job["next_fire"])]
            if spec.schedule.kind == "cron":
                upcoming += spec.schedule.next_runs(upcoming[0], 4)
        return JobOut(
            **spec.model_dump(),
            id=job["id"],
            owner=job["owner"],
            paused=job["paused"],
            next_runs=upcoming,
            created=dt(job["created"]),
            updated=dt(job["updated"]),
        )

    def run_out(run: dict[str, Any]) -> RunOut:
        has_report = (Path(run["out_dir"]) / "report.html").is_file()
        has_notebook = (Path(run["out_dir"]) / "output.ipynb").is_file()
        stamps = ("started", "finished", "scheduled_for", "queued")
        times = {k: dt(run[k]) if run[k] else None for k in stamps}
        return RunOut(
            **{k: v for k, v in run.items() if k in RunOut.model_fields and k not in times},
            **times,
            report_url=f"{prefix}/api/reports/{run['id']}" if has_report else None,
            log_url=f"{prefix}/api/runs/{run['id']}/log",
            notebook_url=f"{prefix}/api/runs/{run['id']}/notebook" if has_notebook else None,
        )

    def checked(s: Scheduler, owner: str, data: Any) -> JobSpec:
        """The full validation of a definition (schema, notebook, parameters, GPU)."""
        if isinstance(data, dict) and "catch_up" not in data:
            data = {**data, "catch_up": s.default_catch_up}
        spec = parse_spec(data)
        if spec.notebook is not None and s.backend.kind == "local":
            from werkhub.jobs.params import parameters_of, validate_parameters
            from werkhub.jobs.paths import resolve_notebook

            path = resolve_notebook(s.backend.homes / owner, spec.notebook)
            try:
                notebook = json.loads(path.read_text())
            except (ValueError, OSError) as exc:
                raise SpecError(
                    "notebook", f"'{spec.notebook}' is not a readable notebook: {exc}"
                ) from None
            values = validate_parameters(parameters_of(notebook), spec.parameters)
            spec = spec.model_copy(update={"parameters": values})
        elif spec.notebook is not None:  # in a container's home volume: read before the run
            from werkhub.jobs.run.manifests import home_notebook

            home_notebook(spec.notebook)
        if spec.template is not None:
            try:
                s._template(spec.template).resolve_parameters(spec.parameters)
            except ValueError as exc:
                message = str(exc)
                field = "template" if message.startswith("template") else "parameters"
                raise SpecError(field, message.removeprefix("template: ")) from None
        if spec.gpu is not None:
            if s.bookings is None:
                raise SpecError("gpu", "GPU jobs need the booking ledger")
            try:
                s.bookings.check_type(spec.gpu.type, spec.gpu.count)
            except ledger.LedgerError as exc:
                field = {"gpu_type": "type"}.get(exc.detail.get("field", ""), "count")
                raise SpecError(f"gpu.{field}", exc.message) from None
        if spec.image is not None and s.images and spec.image not in s.images:
            raise SpecError("image", f"'{spec.image}' is not one of {', '.join(s.images)}")
        now = ledger.utcnow()
        if (
            spec.schedule.kind == "once"
            and spec.schedule.at is not None
            and spec.schedule.at <= now
        ):
            raise SpecError("schedule.at", "lies in the past; use kind 'now' to run right away")
        return spec

    def stored(spec: JobSpec) -> dict[str, Any]:
        return spec.model_dump(mode="json")

    @router.post(
        "/jobs",
        status_code=201,
        response_model=JobOut,
        responses=queueing,
        summary="Create a job (validated against the notebook's parameters)",
    )
    async def create(s: Sched, user: User, spec: JobSpec) -> JobOut:
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
        responses=errors,
        summary="Own jobs (admins: everyone's with all=true)",
    )
    async def list_jobs(s: Sched, user: User, all: bool = False) -> list[JobOut]:
        jobs = await run_in_threadpool(s.store.list_jobs, viewer_of(user), all)
        return [job_out(j) for j in jobs]

    @router.get("/jobs/{job_id}", response_model=JobOut, responses=errors, summary="One job")
    async def get_job(s: Sched, user: User, job_id: JobId) -> JobOut:
        return job_out(await run_in_threadpool(s.store.get_job, viewer_of(user), job_id))

    @router.patch(
        "/jobs/{job_id}",
        response_model=JobOut,
        responses=errors,
        summary="Change a job: the given top-level fields replace the stored ones",
    )
    async def change(
        s: Sched, user: User, job_id: JobId, body: Annotated[dict[str, Any], Body()]
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
        responses=errors,
        summary="Delete a job; its runs and reports stay, queued runs are cancelled",
    )
    async def delete(s: Sched, user: User, job_id: JobId) -> Response:
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
        spec = JobSpec.model_validate({k: job[k] for k in JobSpec.model_fields if k in job})
        now = ledger.utcnow()
        job = await run_in_threadpool(
            s.store.set_paused, viewer, job_id, paused, first_fire(spec, now), ts(now)
        )
        s.wake()
        return job_out(job)

    @router.post(
        "/jobs/{job_id}/pause",
        response_model=JobOut,
        responses=errors,
        summary="Pause the schedule (a running run finishes)",
    )
    async def pause(s: Sched, user: User, job_id: JobId) -> JobOut:
        return await pause_or_resume(s, user, job_id, True)

    @router.post(
        "/jobs/{job_id}/resume",
        response_model=JobOut,
        responses=errors,
        summary="Resume the schedule from now (missed times are not caught up)",
    )
    async def resume(s: Sched, user: User, job_id: JobId) -> JobOut:
        return await pause_or_resume(s, user, job_id, False)

    @router.post(
        "/jobs/{job_id}/run",
        status_code=202,
        response_model=RunOut,
        responses=queueing,
        summary="Queue a run now (also for a paused job); 429 when too many wait",
    )
    async def run_now(s: Sched, user: User, job_id: JobId) -> RunOut:
        run = await run_in_threadpool(s.store.run_now, viewer_of(user), job_id, ts(ledger.utcnow()))
        s.wake()
        return run_out(run)

    @router.get(
        "/jobs/{job_id}/runs",
        response_model=list[RunOut],
        responses=errors,
        summary="Runs of a job, newest first",
    )
    async def runs(
        s: Sched, user: User, job_id: JobId, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[RunOut]:
        found = await run_in_threadpool(s.store.list_runs, viewer_of(user), job_id, limit)
        return [run_out(r) for r in found]

    @router.get("/runs/{run_id}", response_model=RunOut, responses=errors, summary="One run")
    async def get_run(s: Sched, user: User, run_id: RunId) -> RunOut:
        return run_out(await run_in_threadpool(s.store.get_run, viewer_of(user), run_id))

    def run_file(s: Scheduler, user: HubUser, run_id: int, name: str, shared: bool) -> Path:
        run = s.store.get_run(viewer_of(user), run_id, shared=shared)
        path = Path(run["out_dir"]) / name
        if not path.is_file():
            raise JobError(f"run {run_id} has no {name} (status {run['status']})")
        return path

    @router.get(
        "/runs/{run_id}/log",
        response_class=PlainTextResponse,
        responses=errors,
        summary="The run's log (runner output), as text",
    )
    async def run_log(s: Sched, user: User, run_id: RunId) -> PlainTextResponse:
        run = await run_in_threadpool(s.store.get_run, viewer_of(user), run_id)
        path = Path(run["out_dir"]) / "log.txt"
        text = path.read_text(errors="replace") if path.is_file() else ""
        return PlainTextResponse(text)

    @router.get(
        "/runs/{run_id}/notebook",
        responses=errors,
        summary="The output notebook (kept also when the run failed)",
    )
    async def run_notebook(s: Sched, user: User, run_id: RunId) -> FileResponse:
        path = await run_in_threadpool(run_file, s, user, run_id, "output.ipynb", False)
        return FileResponse(
            path, media_type="application/x-ipynb+json", filename=f"run-{run_id}.ipynb"
        )

    @router.get(
        "/reports",
        response_model=list[ReportCard],
        responses=errors,
        summary="Report gallery: own and shared with my groups (admins: all), newest first",
    )
    async def reports(s: Sched, user: User) -> list[ReportCard]:
        found = await run_in_threadpool(s.store.reports, viewer_of(user))
        return [
            ReportCard(
                run_id=r["id"],
                job_id=r["job_id"],
                job_name=r["job_name"],
                owner=r["owner"],
                title=r["title"],
                status=r["status"],
                finished=dt(r["finished"]) if r["finished"] else None,
                url=f"{prefix}/api/reports/{r['id']}",
                shared_with=r["shared_with"],
            )
            for r in found
            if (Path(r["out_dir"]) / "report.html").is_file()
        ]

    @router.get(
        "/reports/{run_id}",
        response_class=HTMLResponse,
        responses=errors,
        summary="A run's HTML report (self-contained; shown sandboxed)",
    )
    async def report(s: Sched, user: User, run_id: RunId) -> Response:
        path = await run_in_threadpool(run_file, s, user, run_id, "report.html", True)
        return FileResponse(
            path,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"},
        )

    @router.post(
        "/reports/{run_id}/share",
        responses=errors,
        summary="Share a report with a group (owner or admin)",
    )
    async def share(s: Sched, user: User, run_id: RunId, body: ShareIn) -> dict[str, Any]:
        groups = await run_in_threadpool(
            s.store.share, viewer_of(user), run_id, body.group, ts(ledger.utcnow())
        )
        return {"run_id": run_id, "shared_with": groups}

    @router.delete(
        "/reports/{run_id}/share/{group}",
        responses=errors,
        summary="Stop sharing a report with a group",
    )
    async def unshare(
        s: Sched, user: User, run_id: RunId, group: Annotated[str, PathParam(max_length=64)]
    ) -> dict[str, Any]:
        if not re.match(GROUP, group):
            raise SpecError("group", "not a group name")
        groups = await run_in_threadpool(s.store.unshare, viewer_of(user), run_id, group)
        return {"run_id": run_id, "shared_with": groups}

    @router.post(
        "/jobs/inspect",
        response_model=InspectOut,
        responses=errors,
        summary="Parameters of a notebook in my home (for job forms)",
    )
    async def inspect(s: Sched, user: User, body: InspectIn) -> InspectOut:
        from werkhub.jobs.params import parameters_of
        from werkhub.jobs.paths import resolve_notebook

        owner = owner_of(user)

        def read() -> dict[str, Any]:
            path = resolve_notebook(s.backend.homes / owner, body.notebook)
            try:
                return json.loads(path.read_text())
            except (ValueError, OSError) as exc:
                raise SpecError("notebook", f"not a readable notebook: {exc}") from None

        found = parameters_of(await run_in_threadpool(read))
        return InspectOut(
            parameters=[
                ParamOut(name=p.name, type=p.type, default=p.default) for p in found.values()
            ]
        )

    @router.get(
        "/cron/preview",
        responses=errors,
        summary="The next 5 times of a cron expression in a time zone",
    )
    async def preview(
        user: User,
        cron: Annotated[str, Query(max_length=200, examples=["0 6 * * 1-5"])],
        tz: Annotated[str, Query(max_length=64)] = "Europe/Berlin",
    ) -> dict[str, list[datetime]]:
        from werkhub.jobs.cron import Cron, zone

        parsed = Cron.parse(cron)
        return {"next": parsed.next_fires(ledger.utcnow(), zone(tz, "tz"), 5)}

    return router
