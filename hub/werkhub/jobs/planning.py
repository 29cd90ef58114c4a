"""Pure planning of job runs for the scheduler: when a job fires (with its catch-up policy
for times missed while werkhub was down) and where a run goes (per-owner MLflow experiment
names, container paths of a template run, Kubernetes quantities). Standard library,
pydantic and werkhub's pure modules only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo

from werkhub.jobs.run.manifests import HOME, container_out_dir
from werkhub.jobs.spec import JobSpec, catchup_fires


def ts(moment: datetime) -> float:
    return moment.timestamp()


def dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def kube_memory(limit: str | None) -> str | None:
    """A Docker memory limit ("768m", "8G", "2GB", "1.5g": binary units) as a Kubernetes
    quantity in bytes-exact binary units ("768Mi", "8Gi", "2Gi", "1536Mi")."""
    if not limit:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", limit.lower())
    if match is None:
        return limit
    number, unit = float(match.group(1)), match.group(2)
    steps = ["", "k", "m", "g", "t"]
    power = steps.index(unit if unit != "b" else "")
    # a fraction moves down a unit until it is whole: 1.5Gi -> 1536Mi
    while not number.is_integer() and power > 0:
        number, power = number * 1024, power - 1
    suffix = ["", "Ki", "Mi", "Gi", "Ti"][power]
    return f"{int(number)}{suffix}"


def whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def owned_experiment(owner: str, name: str) -> str:
    """MLflow experiment names are global and experiments belong to their creator, so a
    job's experiment is the owner's: "quality-inspection" becomes "ann/quality-inspection"
    (as the templates name it in the owner's server); a name with a "/" is kept."""
    return name if "/" in name else f"{owner}/{name}"


def in_container(request: dict[str, Any], out_dir: Path) -> None:
    """Point a template run's request at the copy the Docker runner puts into the owner's
    home volume (``out_dir/work`` goes to the run's folder there before the start)."""
    inner = PurePosixPath(container_out_dir(request))
    notebook = Path(request["notebook"]).relative_to(out_dir)
    request["notebook_label"] = str((inner / notebook).relative_to(HOME))
    parameters = request["parameters"]
    if "results_path" in parameters:
        parameters["results_path"] = str(inner / "results.json")


def first_fire(spec: JobSpec, now: datetime) -> float | None:
    """When a new (or resumed) job fires first; None for run-now and past one-offs."""
    upcoming = spec.schedule.next_runs(now, 1)
    return ts(upcoming[0]) if upcoming else None


def plan_fires(
    spec: JobSpec, next_fire: float, now: datetime, on_time: timedelta
) -> tuple[list[tuple[float, str]], float | None]:
    """Runs to queue for a job whose ``next_fire`` has come, as (scheduled time, trigger)
    with trigger "schedule" or "catch_up", and the job's new next fire.

    The newest due fire is on time if it is at most ``on_time`` old. Older fires were
    missed (werkhub was down): ``once`` queues the newest of them as one late run, ``all``
    queues each, ``skip`` none."""
    due = dt(next_fire)
    policy = spec.catch_up
    if spec.schedule.kind == "cron":
        cron, tz = spec.schedule.parsed_cron(), ZoneInfo(spec.schedule.tz)
        since = due - timedelta(microseconds=1)
        newest = catchup_fires(cron, tz, since, now, "once") or [due]
        fires = catchup_fires(cron, tz, since, now, "all") if policy == "all" else newest
        after = cron.next_fire(now, tz)
        upcoming: float | None = ts(after)
    else:  # once
        newest = fires = [due]
        upcoming = None
    late = now - newest[-1] > on_time
    if late and policy == "skip":
        fires = []
    planned = [(ts(f), "catch_up" if now - f > on_time else "schedule") for f in fires]
    return planned, upcoming
