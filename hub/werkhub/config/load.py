"""Load ``werkhub.yaml`` and turn validation failures into messages a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from werkhub.config.schema import WerkhubConfig
from werkhub.errors import Misconfigured


class ConfigError(Misconfigured):
    """The configuration cannot be used; ``problems`` lists one line per key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(
            f"{source}: invalid configuration\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``path`` (for listing allowed keys)."""
    model: type[BaseModel] = WerkhubConfig
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", None) or (annotation,)
        sub = next(
            (a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if sub is None:
            return None
        model = sub
    return model


def format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = ", ".join(owner.model_fields) if owner else "none"
            problems.append(f"{key}: unknown key; allowed keys here: {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, Mapping) or got is None else f" (got {got!r})"
        problems.append(f"{key}: {msg}{shown}")
    return problems


def parse_config(data: Any, source: str = "werkhub.yaml") -> WerkhubConfig:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["(top level): must be a mapping of sections (hub:, auth:, ...)"])
    try:
        return WerkhubConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from None


def load_config(path: str | Path | None) -> WerkhubConfig:
    """Read and validate a config file; ``None`` or an absent default file gives the defaults."""
    if path is None:
        return WerkhubConfig()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(str(file), ["file not found"])
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            str(file), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]
        ) from None
    return parse_config(data, str(file))
