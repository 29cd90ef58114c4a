"""Pure rules of model serving: what an endpoint request may say, the states an endpoint
goes through, when it scales to zero, how long it waits after a crash, and the figures
of a minute of traffic. Standard library and pydantic only."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: endpoint names: lower-case letters, digits and dashes, a letter first (they appear in
#: URLs, container and Kubernetes object names)
NAME_PATTERN = r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$"
MAX_NAME = 40
#: MLflow's longest registered model name
MAX_MODEL = 256
#: the alias a template sets when its quality gate passes
DEFAULT_ALIAS = "champion"
STATES = ("starting", "ready", "scaled_to_zero", "failed")
#: the paths of a scoring server an endpoint passes on
PASSED = ("invocations", "ping", "version", "health")
#: the last request/response pairs an endpoint keeps when logging is on
LOG_KEEP = 100
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$", re.IGNORECASE)
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")

EndpointName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=NAME_PATTERN,
        description="lower-case letters, digits and dashes, a letter first, e.g. line-3-camera",
    ),
]


def memory_bytes(value: str) -> int:
    """'512M', '2G', '1.5Gi' -> bytes; ValueError with a readable message otherwise."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is no memory size: write e.g. 512M or 2G")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


class GpuRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=96, description="a GPU type of this site")
    count: int = Field(ge=1, le=16, description="GPUs the endpoint holds while it runs")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(default=1.0, ge=0.1, le=64, description="CPU cores (a limit)")
    memory: str = Field(default="2G", max_length=16, description="memory limit, e.g. 2G")
    gpu: GpuRequest | None = Field(default=None, description="GPUs, or null for none")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        size = memory_bytes(value)
        if size < 128 * 1024**2:
            raise ValueError("at least 128M: a scoring server does not start in less")
        if size > 1024**4:
            raise ValueError("at most 1T")
        return value


def _check_alias(value: str | None) -> str | None:
    if value is not None and not _ALIAS.match(value):
        raise ValueError(f"'{value[:60]}' is no MLflow alias (letters, digits, _ and -)")
    if value is not None and re.fullmatch(r"v\d+", value, re.IGNORECASE):
        raise ValueError("MLflow reserves aliases like v1, v2 for versions")
    return value


def _check_version(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[1-9]\d{0,9}", value):
        raise ValueError(f"'{value[:20]}' is no model version (a number, e.g. 3)")
    return value


def _check_model(value: str) -> str:
    if not value.strip() or "/" in value or ":" in value:
        raise ValueError(f"'{value[:80]}' is no registered model name (no '/' or ':')")
    return value


class EndpointCreate(BaseModel):
    """``POST /endpoints``: which model version to serve, with what, how it scales."""

    model_config = ConfigDict(extra="forbid")

    name: EndpointName
    model: str = Field(
        min_length=1, max_length=MAX_MODEL, description="registered model, e.g. ann~classifier"
    )
    alias: str | None = Field(
        default=None, description="serve the version this alias points to (followed)"
    )
    version: str | None = Field(default=None, description="serve this fixed version")
    resources: Resources = Field(default_factory=Resources)
    min_replicas: Literal[0, 1] = Field(
        default=1, description="0: stop after idle_minutes without requests, start on demand"
    )
    idle_minutes: int = Field(default=30, ge=1, le=10080)
    groups: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=50, description="hub groups that may call it"
    )
    request_logging: bool = Field(
        default=False, description="keep the last 100 request/response pairs"
    )

    _model = field_validator("model")(_check_model)
    _alias = field_validator("alias")(_check_alias)
    _version = field_validator("version")(_check_version)

    @model_validator(mode="after")
    def _one_reference(self) -> EndpointCreate:
        if self.alias is not None and self.version is not None:
            raise ValueError("give either alias or version, not both")
        if self.alias is None and self.version is None:
            self.alias = DEFAULT_ALIAS
        return self


class EndpointPatch(BaseModel):
    """``PATCH /endpoints/{name}``: any of the fields; a new alias or version rolls out."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=MAX_MODEL)
    alias: str | None = None
    version: str | None = None
    resources: Resources | None = None
    min_replicas: Literal[0, 1] | None = None
    idle_minutes: int | None = Field(default=None, ge=1, le=10080)
    groups: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None, max_length=50
    )
    request_logging: bool | None = None

    _alias = field_validator("alias")(_check_alias)
    _version = field_validator("version")(_check_version)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return None if value is None else _check_model(value)

    @model_validator(mode="after")
    def _one_reference(self) -> EndpointPatch:
        if self.alias is not None and self.version is not None:
            raise ValueError("give either alias or version, not both")
        if not self.model_fields_set:
            raise ValueError("nothing to change: give at least one field")
        return self


class Settings(BaseModel):
    """What the database keeps of an endpoint besides its name, model and state."""

    resources: Resources
    min_replicas: Literal[0, 1]
    idle_minutes: int
    request_logging: bool = False


def patched(current: dict[str, object], patch: EndpointPatch) -> tuple[dict[str, object], bool]:
    """The endpoint's fields after ``patch``, and whether the model reference changed (a
    rollout). ``current`` holds model, alias, version, groups and settings (a dict)."""
    new = dict(current)
    settings = dict(current["settings"])  # type: ignore[call-overload]
    given = patch.model_fields_set
    if "model" in given and patch.model is not None:
        new["model"] = patch.model
    if "alias" in given and patch.alias is not None:
        new["alias"], new["version"] = patch.alias, None
    if "version" in given and patch.version is not None:
        new["version"], new["alias"] = patch.version, None
    if "model" in given and "alias" not in given and "version" not in given:
        new["alias"], new["version"] = current.get("alias") or DEFAULT_ALIAS, None
    for key in ("min_replicas", "idle_minutes", "request_logging"):
        if key in given and getattr(patch, key) is not None:
            settings[key] = getattr(patch, key)
    if "resources" in given and patch.resources is not None:
        settings["resources"] = patch.resources.model_dump()
    if "groups" in given and patch.groups is not None:
        new["groups"] = sorted(set(patch.groups))
    new["settings"] = settings
    moved = any(new.get(k) != current.get(k) for k in ("model", "alias", "version"))
    return new, moved


def scale_to_zero(
    min_replicas: int, idle_minutes: int, last_request: float, now: float, inflight: int
) -> bool:
    """Whether a running endpoint should stop: only with ``min_replicas`` 0, nothing in
    flight, and no request for ``idle_minutes`` (times in seconds)."""
    return min_replicas == 0 and inflight == 0 and now - last_request >= idle_minutes * 60


def backoff(failures: int, first: float = 2.0, cap: float = 300.0) -> float:
    """Seconds to wait before restarting a server that crashed ``failures`` times in a
    row: 2, 4, 8, ... up to five minutes."""
    return min(cap, first * 2 ** max(0, failures - 1))


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-share * len(sorted_values) // 1))))
    return sorted_values[rank - 1]


class MinuteFigures(BaseModel):
    minute: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    version: str | None = None


def summarise(minute: int, latencies_ms: list[float], errors: int, version: str | None) -> dict:
    values = sorted(latencies_ms)
    return {
        "minute": minute,
        "requests": len(values),
        "errors": errors,
        "p50_ms": round(percentile(values, 0.50), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
        "version": version,
    }


def clip(text: str, limit: int) -> str:
    """A logged request or answer, cut to ``limit`` characters with a mark."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters not kept]"
