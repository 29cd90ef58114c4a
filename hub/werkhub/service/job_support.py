"""What the jobs routes share: refusals naming the field, the caller as a store viewer, the
scheduler dependency, the full check of a job definition, and the answer models built
from store rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from werkhub.auth.hub import HubUser
from werkhub.booking import ledger
from werkhub.jobs.errors import JobError, SpecError
from werkhub.jobs.planning import dt
from werkhub.jobs.scheduler import Scheduler
from werkhub.jobs.spec import JobSpec, parse_spec, spec_error
from werkhub.jobs.store import Viewer
from werkhub.service.job_models import CLI_SERVICE, JobOut, ReportCard, RunOut


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


def owner_of(user: HubUser) -> str:
    if user.kind == "service":
        raise JobError("jobs belong to users: use a user's hub token", "owner")
    return user.name


async def scheduler(request: Request) -> Scheduler:
    """FastAPI dependency: the service's job scheduler (503 when jobs are off)."""
    found = getattr(request.app.state, "jobs", None)
    if found is None:
        raise HTTPException(503, "jobs are disabled (jobs.enabled: false in werkhub.yaml)")
    return found


Sched = Annotated[Scheduler, Depends(scheduler)]


def spec_of(job: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate({k: job[k] for k in JobSpec.model_fields if k in job})


def job_out(job: dict[str, Any]) -> JobOut:
    spec = spec_of(job)
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


def run_out(run: dict[str, Any], api: str) -> RunOut:
    """A run as the API shows it; ``api`` is where the service's API lives (links)."""
    has_report = (Path(run["out_dir"]) / "report.html").is_file()
    has_notebook = (Path(run["out_dir"]) / "output.ipynb").is_file()
    stamps = ("started", "finished", "scheduled_for", "queued")
    times = {k: dt(run[k]) if run[k] else None for k in stamps}
    return RunOut(
        **{k: v for k, v in run.items() if k in RunOut.model_fields and k not in times},
        **times,
        report_url=f"{api}/reports/{run['id']}" if has_report else None,
        log_url=f"{api}/runs/{run['id']}/log",
        notebook_url=f"{api}/runs/{run['id']}/notebook" if has_notebook else None,
    )


def report_cards(rows: list[dict[str, Any]], api: str) -> list[ReportCard]:
    """Gallery cards of the runs that have a report."""
    return [
        ReportCard(
            run_id=r["id"],
            job_id=r["job_id"],
            job_name=r["job_name"],
            owner=r["owner"],
            title=r["title"],
            status=r["status"],
            finished=dt(r["finished"]) if r["finished"] else None,
            url=f"{api}/reports/{r['id']}",
            shared_with=r["shared_with"],
        )
        for r in rows
        if (Path(r["out_dir"]) / "report.html").is_file()
    ]


def run_file(s: Scheduler, user: HubUser, run_id: int, name: str, shared: bool) -> Path:
    run = s.store.get_run(viewer_of(user), run_id, shared=shared)
    path = Path(run["out_dir"]) / name
    if not path.is_file():
        raise JobError(f"run {run_id} has no {name} (status {run['status']})")
    return path


def read_notebook(home: Path, notebook: str) -> dict[str, Any]:
    """The notebook ``notebook`` of a home as JSON (path rules of ``resolve_notebook``)."""
    from werkhub.jobs.paths import resolve_notebook

    path = resolve_notebook(home, notebook)
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise SpecError("notebook", f"'{notebook}' is not a readable notebook: {exc}") from None


def checked(s: Scheduler, owner: str, data: Any) -> JobSpec:
    """The full validation of a definition (schema, notebook, parameters, GPU, image)."""
    if isinstance(data, dict) and "catch_up" not in data:
        data = {**data, "catch_up": s.default_catch_up}
    spec = parse_spec(data)
    if spec.notebook is not None and s.backend.kind == "local":
        from werkhub.jobs.params import parameters_of, validate_parameters

        notebook = read_notebook(s.backend.homes / owner, spec.notebook)
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
    at = spec.schedule.at if spec.schedule.kind == "once" else None
    if at is not None and at <= ledger.utcnow():
        raise SpecError("schedule.at", "lies in the past; use kind 'now' to run right away")
    return spec


def stored(spec: JobSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")
