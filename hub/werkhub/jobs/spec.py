"""A job definition: what notebook to run, with which parameters, when, where and how.

Pure logic (standard library and pydantic only). Every rule a person can break raises
:class:`SpecError` (or, through pydantic, a ValidationError that :func:`parse_spec` turns
into a SpecError) naming the field and what is allowed.

Catch-up policy for fires missed while werkhub was down (``catch_up``):

* ``once`` (default): the missed fires collapse into one run, started late, for the most
  recent missed fire;
* ``all``: every missed fire runs, oldest first (at most :data:`MAX_CATCHUP`, the newest);
* ``skip``: missed fires are dropped; the next regular fire runs.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from werkhub.jobs.cron import Cron, zone
from werkhub.jobs.errors import SpecError

#: most runs the "all" catch-up policy starts for one job
MAX_CATCHUP = 100
#: the longest wait between two attempts
MAX_BACKOFF_S = 24 * 3600
#: largest JSON size of a job's parameters
MAX_PARAMETERS_BYTES = 64 * 1024

_NAME = re.compile(r"^[^\x00-\x1f\x7f]+$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,199}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedule(_Model):
    """When a job runs: a cron schedule in a time zone, once at a time, or right away."""

    kind: Literal["cron", "once", "now"] = "now"
    cron: str | None = Field(default=None, description="5-field cron expression or @daily etc.")
    tz: str = Field(default="Europe/Berlin", description="IANA time zone of the cron schedule")
    at: datetime | None = Field(default=None, description="once: when (naive = in tz)")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zone(value)
        except SpecError as exc:
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Schedule:
        if self.kind == "cron":
            if not self.cron:
                raise ValueError("cron: required when kind is 'cron' (e.g. '0 6 * * 1-5')")
            Cron.parse(self.cron)  # SpecError: converted by parse_spec
        elif self.cron is not None:
            raise ValueError(f"cron: only allowed when kind is 'cron' (kind is '{self.kind}')")
        if self.kind == "once":
            if self.at is None:
                raise ValueError("at: required when kind is 'once' (an ISO 8601 date and time)")
            if self.at.tzinfo is None:
                self.at = self.at.replace(tzinfo=ZoneInfo(self.tz))
            self.at = self.at.astimezone(UTC)
        elif self.at is not None:
            raise ValueError(f"at: only allowed when kind is 'once' (kind is '{self.kind}')")
        return self

    def parsed_cron(self) -> Cron:
        if self.cron is None:
            raise SpecError("schedule.cron", "this schedule has no cron expression")
        return Cron.parse(self.cron)

    def next_runs(self, after_utc: datetime, n: int = 5) -> list[datetime]:
        """The next ``n`` run times after ``after_utc`` (UTC, aware); none for "now"."""
        if self.kind == "cron":
            return self.parsed_cron().next_fires(after_utc, ZoneInfo(self.tz), n)
        if self.kind == "once" and self.at is not None and self.at > after_utc:
            return [self.at]
        return []


class GpuNeed(_Model):
    type: str = Field(min_length=1, max_length=80, description='bookable GPU type, e.g. "H100"')
    count: int = Field(default=1, ge=1, le=16)
    minutes: int = Field(default=60, ge=1, le=7 * 24 * 60, description="expected run time")


class Retries(_Model):
    max: int = Field(default=0, ge=0, le=10, description="retries after a failed attempt")
    backoff_s: float = Field(default=60.0, ge=0, le=MAX_BACKOFF_S)
    factor: float = Field(default=2.0, ge=1.0, le=10.0)


class ReportOptions(_Model):
    title: str | None = Field(default=None, max_length=200)
    hide_code: bool = True


class JobSpec(_Model):
    """What a person submits to create a job (``POST /api/jobs``)."""

    name: str = Field(min_length=1, max_length=100)
    notebook: str | None = Field(
        default=None, max_length=500, description="path of a .ipynb in the owner's home"
    )
    template: str | None = Field(default=None, description="template slug instead of a notebook")
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule = Field(default_factory=Schedule)
    image: str | None = Field(default=None, description="image name (Docker/Kubernetes)")
    gpu: GpuNeed | None = None
    cell_timeout_s: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    deadline_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    retries: Retries = Field(default_factory=Retries)
    report: ReportOptions = Field(default_factory=ReportOptions)
    notify_success: bool = False
    catch_up: Literal["once", "all", "skip"] = "once"

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = value.strip()
        if not value or not _NAME.match(value):
            raise ValueError("must be non-empty text without control characters")
        return value

    @field_validator("notebook")
    @classmethod
    def _relative_notebook(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
            raise ValueError(f"'{value}' is absolute; give a path relative to your home folder")
        parts = value.replace("\\", "/").split("/")
        if ".." in parts:
            raise ValueError(f"'{value}' leaves your home folder ('..' is not allowed)")
        if not value.endswith(".ipynb"):
            raise ValueError(f"'{value}' is not a notebook; the path must end in .ipynb")
        return value

    @field_validator("template")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not _SLUG.match(value):
            raise ValueError(f"'{value}' is not a template slug (lowercase letters, digits, -)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE.match(value):
            raise ValueError(f"'{value}' is not an image name")
        return value

    @field_validator("parameters")
    @classmethod
    def _json_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _PARAM_NAME.match(name):
                raise ValueError(f"'{name}' is not a Python variable name")
        try:
            size = len(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"values must be JSON (numbers, text, true/false, lists): {exc}"
            ) from None
        if size > MAX_PARAMETERS_BYTES:
            raise ValueError(f"{size} bytes of parameters; at most {MAX_PARAMETERS_BYTES}")
        return value

    @model_validator(mode="after")
    def _source_and_limits(self) -> JobSpec:
        if (self.notebook is None) == (self.template is None):
            raise ValueError("notebook: give exactly one of 'notebook' or 'template'")
        if self.cell_timeout_s > self.deadline_s:
            raise ValueError(
                f"cell_timeout_s: {self.cell_timeout_s} s is longer than the whole-run "
                f"deadline_s ({self.deadline_s} s)"
            )
        return self

    @property
    def title(self) -> str:
        return self.report.title or self.name


def _field_of(loc: tuple[Any, ...], message: str) -> tuple[str, str]:
    path = [str(p) for p in loc]
    # model-level validators name their field at the start of the message
    head, sep, rest = message.partition(": ")
    if sep and re.match(r"^[a-z_]+$", head):
        path.append(head)
        message = rest
    return ".".join(path) or "spec", message


def parse_spec(data: Any) -> JobSpec:
    """``JobSpec`` from untrusted JSON; the first problem becomes a SpecError."""
    try:
        return JobSpec.model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        raise spec_error(exc) from None


def spec_error(exc: ValidationError) -> SpecError:
    """The first error of a pydantic ValidationError as a readable SpecError."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):
        prefix = ".".join(str(p) for p in err["loc"] if not cause.field.startswith(str(p)))
        return SpecError(f"{prefix}.{cause.field}" if prefix else cause.field, cause.message)
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field (not allowed here)"
    elif err["type"] == "missing":
        message = "required"
    elif err["type"] == "literal_error":
        message = f"{message} (got {err.get('input')!r})"
    field, message = _field_of(tuple(err["loc"]), message)
    return SpecError(field, message)


def backoff_seconds(retries: Retries, attempt: int) -> float:
    """Wait before the next try after failed attempt number ``attempt`` (1 = the first
    run): ``backoff_s * factor ** (attempt - 1)``, at most a day."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    return min(retries.backoff_s * retries.factor ** (attempt - 1), MAX_BACKOFF_S)


def catchup_fires(
    cron: str | Cron,
    tz: str | ZoneInfo,
    last_fire: datetime | None,
    now: datetime,
    policy: Literal["once", "all", "skip"],
) -> list[datetime]:
    """Fires missed in (last_fire, now] that should still run, oldest first (see the
    module notes for the policies). No last fire (a new job): nothing to catch up."""
    if last_fire is None or policy == "skip":
        return []
    parsed = Cron.parse(cron) if isinstance(cron, str) else cron
    zoneinfo = zone(tz) if isinstance(tz, str) else tz
    if policy not in ("once", "all"):
        raise SpecError("catch_up", f"'{policy}' is not one of once, all, skip")
    return _recent_fires(parsed, zoneinfo, last_fire, now, 1 if policy == "once" else MAX_CATCHUP)


def _recent_fires(
    cron: Cron, tz: ZoneInfo, last_fire: datetime, now: datetime, want: int
) -> list[datetime]:
    """The newest ``want`` fires in (last_fire, now], oldest first; looks back in growing
    windows so that a long outage of a minutely job costs no more than the answer."""
    for days in (1, 7, 31, 366, 10 * 366, None):
        start = last_fire if days is None else max(last_fire, now - timedelta(days=days))
        fires = list(cron.fires_between(start, now, tz, limit=10_000_000))
        if len(fires) >= want or start == last_fire:
            return fires[-want:]
    return []
