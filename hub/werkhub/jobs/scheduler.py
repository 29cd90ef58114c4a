"""The job scheduler: an asyncio loop inside the werkhub service.

Each tick (and at once after an API call) it

1. queues the runs of jobs whose scheduled time has come, following their catch-up
   policy for times missed while werkhub was down (``plan_fires``);
2. starts queued runs, owners taking turns (``werkhub.jobs.fairness``: a flood by one
   owner delays another's run by one run slot at most), as long as ``max_concurrent``
   runs overall and ``max_per_user`` runs per owner are not exceeded; a GPU job first
   books its GPUs through the booking ledger and waits (``waiting_gpu``) while none are
   free, leaving its slot to the next run;
3. records each outcome, queues a retry with backoff per the job's policy, notifies the
   owner, and releases the GPU booking.

Time comes from ``werkhub.booking.ledger.utcnow`` (the seam tests move). On start, runs
left ``running`` by a crash are marked ``interrupted`` (their orphaned process group is
ended) and retried per policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from werkhub.booking import ledger
from werkhub.errors import WerkhubError
from werkhub.jobs.notify import Mailer, notice_for
from werkhub.jobs.planning import (
    in_container,
    kube_memory,
    owned_experiment,
    plan_fires,
    ts,
    whole,
)
from werkhub.jobs.run import launch
from werkhub.jobs.run import slurm as slurm_run
from werkhub.jobs.spec import JobSpec, backoff_seconds
from werkhub.jobs.store import JobStore, Retry

#: tries to mint a run's hub token for MLflow (1 s, then 2 s apart) before it runs untracked
MINT_ATTEMPTS = 3

log = logging.getLogger("werkhub.jobs.scheduler")


@dataclass
class Backend:
    """Where runs execute and what they get: built by the service from werkhub.yaml."""

    kind: str = "local"  # local | docker | kubernetes
    homes: Path = Path(".werkhub/homes")
    kernel_name: str = "python3"
    mlflow_uri: str = ""
    service_url: str = ""
    docker_options: dict[str, Any] = field(default_factory=dict)
    templates_root: Path | None = None
    #: spawner.environment of werkhub.yaml: what the owner's server gets, a run gets too
    #: (e.g. the addresses of the service and MLflow as seen from a bridge network)
    environment: dict[str, str] = field(default_factory=dict)
    #: kind slurm: the cluster, partitions, user mapping and node Python
    #: (:mod:`werkhub.jobs.run.slurm`)
    slurm: dict[str, Any] = field(default_factory=dict)


async def mint_job_token(
    mint: Callable[..., Awaitable[str]],
    owner: str,
    deadline_s: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str | None:
    """A hub token of ``owner`` for MLflow and werkhub, valid an hour past the run's
    deadline; tried again (1 s, then 2 s later) while the hub is slow or away, not when
    it refuses (4xx). None when there is none: the run then goes untracked."""
    scopes = ["access:services!service=mlflow", "access:services!service=werkhub"]
    for attempt in range(MINT_ATTEMPTS):
        try:
            return await mint(
                owner, note="werkhub job", expires_in=deadline_s + 3600, scopes=scopes
            )
        except Exception as exc:
            final = 400 <= getattr(exc, "status_code", 500) < 500
            if final or attempt == MINT_ATTEMPTS - 1:
                log.warning("no MLflow token for %s: %s", owner, exc)
                return None
            await sleep(2**attempt)
    return None


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        *,
        max_concurrent: int = 2,
        max_per_user: int = 1,
        tick_seconds: float = 10,
        on_time_seconds: float = 120,
        bookings: Any = None,
        inventory: dict[str, Any] | None = None,
        auth: Any = None,
        mailer: Mailer | None = None,
        report_link: str = "",
        default_catch_up: str = "once",
        images: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.backend = backend
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self.tick_seconds = tick_seconds
        self.on_time = timedelta(seconds=on_time_seconds)
        self.bookings = bookings
        self.inventory = inventory
        self.auth = auth
        self.mailer = mailer or Mailer(None)
        self.report_link = report_link
        self.default_catch_up = default_catch_up
        self.images = images
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # ---- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        await self.recover()
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and every run in progress (marked interrupted, retried later)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("jobs tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_seconds)
            self._wake.clear()

    async def recover(self) -> None:
        """Runs left running by a crash: end their orphaned process, mark them
        interrupted, retry per policy."""
        for run in await asyncio.to_thread(self.store.running_runs):
            if run["id"] in self.tasks:
                continue
            pgid = run["pid"]
            if self.backend.kind == "slurm":
                if pgid:  # the run's Slurm job id
                    await slurm_run.cancel(self.backend.slurm, str(pgid))
            elif pgid and launch.orphan_of(pgid, run["out_dir"]):
                log.warning("ending the orphaned process group %s of run %s", pgid, run["id"])
                await launch.kill_group(pgid)
            if self.backend.kind == "docker":
                await launch.end_containers(self.backend.docker_options, run["id"])
            outcome = launch.Outcome(
                status="interrupted",
                error="the werkhub service stopped while this run was running",
            )
            await self._finish(run, JobSpec.model_validate(run["spec"]), outcome)

    # ---- one tick -------------------------------------------------------------------
    async def tick(self, now: datetime | None = None) -> None:
        now = now or ledger.utcnow()
        await self.fire_due(now)
        await self.start_runnable(now)

    async def fire_due(self, now: datetime) -> list[int]:
        queued: list[int] = []
        for job in await asyncio.to_thread(self.store.due_jobs, ts(now)):
            try:
                spec = JobSpec.model_validate(job["spec"])
                fires, upcoming = plan_fires(spec, job["next_fire"], now, self.on_time)
            except Exception as exc:  # a stored definition that no longer parses
                log.error("job %s cannot be scheduled: %s", job["id"], exc)
                fires, upcoming = [], None
            queued += await asyncio.to_thread(
                self.store.record_fires, job["id"], job["next_fire"], fires, upcoming, ts(now)
            )
        return queued

    async def start_runnable(self, now: datetime) -> None:
        """Start what the fair queue offers; a GPU run that finds no free GPU gives its
        slot to the next run in the queue (asked again without it)."""
        skipped: set[int] = set()
        while await self._start_offered(now, skipped):
            pass

    async def _start_offered(self, now: datetime, skipped: set[int]) -> bool:
        """Start the runs offered now; True when one had to be skipped (ask again)."""
        runs = await asyncio.to_thread(
            self.store.runnable, ts(now), self.max_concurrent, self.max_per_user, skipped
        )
        again = False
        for run in runs:
            if run["id"] in self.tasks:
                continue
            spec = JobSpec.model_validate(run["spec"])
            booking = None
            if spec.gpu is not None:
                booking = await self._book(run, spec)
                if booking is None:
                    skipped.add(run["id"])
                    again = True
                    continue
            started = await asyncio.to_thread(
                self.store.mark,
                run["id"],
                "running",
                started=ts(ledger.utcnow()),
                booking_id=booking["id"] if booking else None,
            )
            if not started:
                await self._release(run["owner"], booking)
                continue
            task = asyncio.create_task(self._execute(run, spec, booking))
            self.tasks[run["id"]] = task
            task.add_done_callback(lambda _t, rid=run["id"]: self.tasks.pop(rid, None))
        return again

    async def _book(self, run: dict[str, Any], spec: JobSpec) -> dict[str, Any] | None:
        """A GPU booking from now for the expected duration, or None (waiting_gpu; or the
        run failed when the ledger refuses it for good)."""
        from werkhub.booking.ledger import LedgerError
        from werkhub.booking.settings import Caller

        assert spec.gpu is not None
        if self.bookings is None:
            await self._fail_now(run, spec, "GPU jobs need the booking ledger")
            return None
        groups: list[str] = []
        if self.auth is not None:
            with contextlib.suppress(Exception):
                groups = list(
                    (await self.auth.user_details(run["owner"]) or {}).get("groups") or []
                )
        try:
            booking, _ = await asyncio.to_thread(
                self.bookings.create,
                Caller(name=run["owner"]),
                run["owner"],
                groups,
                spec.gpu.type,
                spec.gpu.count,
                None,
                None,
                timedelta(minutes=spec.gpu.minutes),
                kind="job",
            )
        except LedgerError as exc:
            if exc.kind == "conflict":
                if run["status"] != "waiting_gpu":
                    await asyncio.to_thread(self.store.mark, run["id"], "waiting_gpu")
                return None
            await self._fail_now(run, spec, f"gpu: {exc.message}")
            return None
        await asyncio.to_thread(self.bookings.mark_started, booking["id"])
        return booking

    async def _release(self, owner: str, booking: dict[str, Any] | None) -> None:
        if booking is None or self.bookings is None:
            return
        from werkhub.booking.settings import Caller

        try:
            await asyncio.to_thread(self.bookings.release, Caller(name=owner), booking["id"])
        except Exception as exc:  # already ended by the ledger's own clock
            log.info("booking %s of a job was not released: %s", booking["id"], exc)

    async def _fail_now(self, run: dict[str, Any], spec: JobSpec, error: str) -> None:
        if await asyncio.to_thread(
            self.store.mark, run["id"], "running", started=ts(ledger.utcnow())
        ):
            await self._finish(run, spec, launch.Outcome(status="failed", error=error))

    # ---- one run --------------------------------------------------------------------
    async def _execute(
        self, run: dict[str, Any], spec: JobSpec, booking: dict[str, Any] | None
    ) -> None:
        outcome = launch.Outcome(status="failed", error="the run did not start")
        try:
            outcome = await self._launch(run, spec, booking)
        except asyncio.CancelledError:
            outcome = launch.Outcome(
                status="interrupted", error="the werkhub service stopped during this run"
            )
            raise
        except Exception as exc:
            log.exception("run %s could not be executed", run["id"])
            outcome = launch.Outcome(status="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            await self._release(run["owner"], booking)
            await asyncio.shield(self._finish(run, spec, outcome))
            self.wake()

    async def _launch(
        self, run: dict[str, Any], spec: JobSpec, booking: dict[str, Any] | None
    ) -> launch.Outcome:
        from werkhub.jobs.errors import SpecError
        from werkhub.jobs.paths import resolve_notebook

        out_dir = Path(run["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        home = self.backend.homes / run["owner"]
        parameters = dict(run["parameters"])
        experiment = f"{run['owner']}/jobs/{spec.name}"
        try:
            if spec.template is not None:
                notebook, cwd = self._template_copy(spec.template, out_dir)
                parameters = self._template_parameters(spec.template, parameters, out_dir)
                parameters.setdefault("mlflow_experiment", experiment)
            elif self.backend.kind == "local":
                home.mkdir(parents=True, exist_ok=True)
                notebook, cwd = resolve_notebook(home, spec.notebook or ""), home
            elif self.backend.kind == "slurm":  # the owner's OS home, as their servers'
                home = await asyncio.to_thread(slurm_run.home_of, run["owner"], self.backend.slurm)
                notebook, cwd = resolve_notebook(home, spec.notebook or ""), home
            else:  # inside the container: relative to the owner's home volume
                notebook, cwd = Path(spec.notebook or ""), Path(".")
        except (SpecError, ValueError, WerkhubError) as exc:
            return launch.Outcome(status="failed", error=str(exc))
        named = parameters.get("mlflow_experiment")
        if isinstance(named, str) and named:  # the notebook's own, e.g. a template's default
            experiment = parameters["mlflow_experiment"] = owned_experiment(run["owner"], named)
        env = await self._environment(run, spec, booking)
        request = {
            "run_id": run["id"],
            "job_id": run["job_id"],
            "job_name": run["job_name"],
            "owner": run["owner"],
            "notebook": str(notebook),
            "notebook_label": spec.notebook or f"template {spec.template}",
            "cwd": str(cwd),
            "out_dir": str(out_dir),
            "parameters": parameters,
            "kernel_name": self.backend.kernel_name,
            "cell_timeout_s": spec.cell_timeout_s,
            "deadline_s": spec.deadline_s,
            "title": spec.title,
            "hide_code": spec.report.hide_code,
            "env": env,
            "mlflow_experiment": experiment,
            "tz": spec.schedule.tz,
        }
        if self.backend.kind == "docker":
            if spec.template is not None:
                in_container(request, out_dir)
            options = {**self.backend.docker_options, "image": self.image_name(spec)}
            if booking is not None:
                options["device_ids"] = self._device_ids(booking)
            return await launch.run_docker(request, options)
        if self.backend.kind == "kubernetes":
            return launch.run_kubernetes(request, self._manifest(request, spec, booking))

        async def on_start(pid: int) -> None:
            await asyncio.to_thread(self.store.set_pid, run["id"], pid)

        if self.backend.kind == "slurm":
            return await slurm_run.run_slurm(request, self.backend.slurm, booking, on_start)

        return await launch.run_local(request, Path(cwd), env, on_start)

    async def _environment(
        self, run: dict[str, Any], spec: JobSpec, booking: dict[str, Any] | None
    ) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.backend.service_url:
            env["WERKHUB_SERVICE_URL"] = self.backend.service_url
        env.update(await self._mlflow_env(run["owner"], spec.deadline_s))
        env.update(self.backend.environment)
        if booking is not None:
            env.update(self._gpu_env(booking))
        env.update(  # who and what this is: never from the configuration
            {
                "JUPYTERHUB_USER": run["owner"],
                "WERKHUB_JOB_ID": str(run["job_id"]),
                "WERKHUB_RUN_ID": str(run["id"]),
            }
        )
        return env

    async def _mlflow_env(self, owner: str, deadline_s: int) -> dict[str, str]:
        """The owner's MLflow identity: a hub token minted for them with the per-user
        tracking environment where available, else the plain tracking URI."""
        try:
            from werkhub.tracking import identity as tracking  # per-user MLflow (helper ML)

            client_env = tracking.client_env
        except (ImportError, AttributeError):
            client_env = None
        mint = getattr(self.auth, "mint_token", None)
        if client_env is not None and mint is not None:
            token = await mint_job_token(mint, owner, deadline_s)
            if token is not None:
                return dict(client_env(token))
        if self.backend.mlflow_uri:
            return {"MLFLOW_TRACKING_URI": self.backend.mlflow_uri}
        return {}

    def _gpu_env(self, booking: dict[str, Any]) -> dict[str, str]:
        from werkhub.gpus.devices import build_assignment, gpu_environment

        assignment = build_assignment(booking, self.inventory or {"units": [], "nodes": []})
        backend = "local" if self.backend.kind == "local" else self.backend.kind
        return gpu_environment(assignment, backend)  # type: ignore[arg-type]

    def _template(self, slug: str) -> Any:
        from werkhub.images.templates import discover_templates

        root = self.backend.templates_root
        found = {t.slug: t for t in discover_templates(root, strict=False)} if root else {}
        if slug not in found:
            raise ValueError(f"template: no template '{slug}' (known: {', '.join(found)})")
        return found[slug]

    def _template_copy(self, slug: str, out_dir: Path) -> tuple[Path, Path]:
        """A private copy of the template (and the templates it requires) for this run."""
        template = self._template(slug)
        work = out_dir / "work"
        for name in [slug, *getattr(template.spec, "requires", [])]:
            source = template.folder.parent / name
            if not (work / name).exists():
                shutil.copytree(
                    source, work / name, ignore=shutil.ignore_patterns("_build", "outputs")
                )
        return work / slug / template.spec.notebook, work / slug

    def _template_parameters(self, slug: str, values: dict[str, Any], out_dir: Path) -> dict:
        resolved = dict(self._template(slug).resolve_parameters(values))
        resolved["results_path"] = str(out_dir / "results.json")
        return resolved

    def _assignment(self, booking: dict[str, Any]) -> Any:
        from werkhub.gpus.devices import build_assignment

        return build_assignment(booking, self.inventory or {"units": [], "nodes": []})

    def _device_ids(self, booking: dict[str, Any]) -> list[str]:
        """The booked devices as the container toolkit names them (Docker backend)."""
        from werkhub.gpus.devices import docker_device_requests

        requests = docker_device_requests(self._assignment(booking))
        return [str(i) for r in requests for i in r.get("DeviceIDs", [])]

    def image_name(self, spec: JobSpec) -> str | None:
        """The curated image a job runs in: its own, else its template's (when that one
        is configured), else None (the default image)."""
        if spec.image:
            return spec.image
        images = self.backend.docker_options.get("images") or {}
        if spec.template is not None:
            with contextlib.suppress(ValueError):
                wanted = getattr(self._template(spec.template).spec, "image", None)
                if wanted in images:
                    return str(wanted)
        return None

    def image_of(self, spec: JobSpec) -> tuple[str, dict[str, Any]]:
        """The image reference of a job (see :meth:`image_name`) and its limits, looked up
        in the configured images as the Docker backend does."""
        from werkhub.jobs.run.docker import resolve_image

        options = self.backend.docker_options
        images = options.get("images") or {}
        default = options.get("default_image") or next(iter(images), "base")
        return resolve_image(self.image_name(spec), images, default)

    def _manifest(
        self, request: dict[str, Any], spec: JobSpec, booking: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The Kubernetes Job of a run: the job's image with its limits, the booked GPUs."""
        from werkhub.jobs.run.manifests import kube_job_manifest

        try:
            image, limits = self.image_of(spec)
            assignment = self._assignment(booking) if booking is not None else None
            return kube_job_manifest(
                request,
                image,
                assignment=assignment,
                mem_limit=kube_memory(limits.get("mem_limit")),
                cpu_limit=whole(limits.get("cpu_limit")),
            )
        except Exception as exc:
            return {"error": f"no manifest: {exc}"}

    async def _finish(self, run: dict[str, Any], spec: JobSpec, outcome: launch.Outcome) -> None:
        status = outcome.status
        now = ts(ledger.utcnow())
        retry = None
        if status != "succeeded" and run["attempt"] <= spec.retries.max:
            retry = Retry(now + backoff_seconds(spec.retries, run["attempt"]))
        view = {**run, "error": outcome.error}
        notice = notice_for(view, status, retry is not None, spec.notify_success)
        done = await asyncio.to_thread(
            self.store.finish,
            run["id"],
            status,
            now,
            retry,
            notice,
            error=(outcome.error or None) and str(outcome.error)[:4000],
            failed_cell=outcome.failed_cell,
            exit_code=outcome.exit_code,
            mlflow_run_id=outcome.mlflow_run_id,
            timings=outcome.timings or None,
        )
        log.info("run %s of job %s: %s", run["id"], run["job_id"], status)
        if notice is not None:
            link = f"{self.report_link}{run['id']}" if self.report_link else ""
            await self.mailer.notify(run["owner"], notice[0], notice[1], link)
        if done.get("retry_id"):
            self.wake()
