"""Starter templates: the schema of ``templates/<slug>/template.yaml`` and how to find them.

The gallery lists what :func:`discover_templates` returns; the jobs service resolves a job's
parameters with :meth:`Template.resolve_parameters` before it hands them to papermill. Every
template notebook also takes the parameters ``results_path`` (where it writes a JSON summary of
its metrics and timings) and ``mlflow_experiment``, so jobs can collect results uniformly.

Standard library, pydantic and PyYAML only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from werkhub.errors import Invalid

log = logging.getLogger(__name__)

TEMPLATE_FILE = "template.yaml"
REQUIRED_PARAMETERS = ("results_path", "mlflow_experiment")
_SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "str": (str,),
    "bool": (bool,),
}

Scalar = bool | int | float | str


class TemplateError(Invalid, ValueError):
    """A template.yaml that cannot be used; ``problems`` name the key path of each error."""

    def __init__(self, source: str | Path, problems: list[str]) -> None:
        self.source = str(source)
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _type_ok(kind: str, value: object) -> bool:
    if isinstance(value, bool) and kind != "bool":
        return False  # YAML `true` is not an int
    return isinstance(value, _PYTHON_TYPES[kind])


class Parameter(_Strict):
    """One papermill parameter: its type, default, meaning and allowed values."""

    type: Literal["int", "float", "str", "bool"]
    default: Scalar
    description: Annotated[str, Field(min_length=3)]
    min: float | None = None
    max: float | None = None
    choices: list[Scalar] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max only apply to int and float parameters, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is larger than max {self.max}")
        for choice in self.choices or []:
            if not _type_ok(self.type, choice):
                raise ValueError(f"choice {choice!r} is not of type {self.type}")
        problem = self.problem(self.default)
        if problem:
            raise ValueError(f"default {problem}")
        return self

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None."""
        if not _type_ok(self.type, value):
            return f"{value!r} is not of type {self.type}"
        if self.min is not None and value < self.min:  # type: ignore[operator]
            return f"{value!r} is below the minimum {self.min:g}"
        if self.max is not None and value > self.max:  # type: ignore[operator]
            return f"{value!r} is above the maximum {self.max:g}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {self.choices}"
        return None


class Runtime(_Strict):
    """Expected wall time at default parameters, papermill kernel start included."""

    cpu_seconds: Annotated[float, Field(gt=0)]
    gpu_seconds: Annotated[float, Field(gt=0)] | None = None


class Gate(_Strict):
    """A quality bar the notebook's recorded metric must meet at default parameters."""

    metric: str
    op: Literal[">=", "<=", ">", "<"]
    value: float

    def passes(self, measured: float) -> bool:
        return {
            ">=": measured >= self.value,
            "<=": measured <= self.value,
            ">": measured > self.value,
            "<": measured < self.value,
        }[self.op]


class TemplateSpec(_Strict):
    """The contents of one template.yaml."""

    title: Annotated[str, Field(min_length=3, max_length=80)]
    summary: Annotated[str, Field(min_length=40)]
    audience: Literal["engineer", "student"]
    notebook: str
    image: Annotated[str, Field(pattern=_SLUG)]
    gpu: Literal["none", "optional", "required"]
    runtime: Runtime
    parameters: dict[str, Parameter]
    smoke_parameters: dict[str, Scalar] = {}
    metrics: dict[str, Annotated[str, Field(min_length=3)]]
    gates: list[Gate] = []
    tags: Annotated[list[Annotated[str, Field(pattern=_SLUG)]], Field(min_length=1)]
    requires: list[Annotated[str, Field(pattern=_SLUG)]] = []

    @field_validator("summary")
    @classmethod
    def _one_paragraph(cls, value: str) -> str:
        if re.search(r"\n\s*\n", value.strip()):
            raise ValueError("the summary must be a single paragraph (no blank lines)")
        return " ".join(value.split())

    @field_validator("notebook")
    @classmethod
    def _relative_notebook(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or path.suffix != ".ipynb":
            raise ValueError("must be a relative path to an .ipynb inside the template folder")
        return value

    @field_validator("parameters")
    @classmethod
    def _identifiers(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise ValueError(f"parameter names must be Python identifiers: {bad}")
        missing = [name for name in REQUIRED_PARAMETERS if name not in value]
        if missing:
            raise ValueError(f"every template takes the parameters {missing}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> TemplateSpec:
        problems = [
            f"smoke_parameters.{name}: {problem}"
            for name, value in self.smoke_parameters.items()
            if (problem := _problem(self.parameters, name, value))
        ]
        problems += [
            f"gates.{i}.metric: {gate.metric!r} is not listed under metrics"
            for i, gate in enumerate(self.gates)
            if gate.metric not in self.metrics
        ]
        if self.gpu != "none" and self.runtime.gpu_seconds is None:
            problems.append(f"runtime.gpu_seconds: required when gpu is {self.gpu!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _problem(parameters: dict[str, Parameter], name: str, value: object) -> str | None:
    if name not in parameters:
        return f"unknown parameter (known: {', '.join(sorted(parameters))})"
    return parameters[name].problem(value)


@dataclass(frozen=True)
class Template:
    """A validated template folder."""

    slug: str
    folder: Path
    spec: TemplateSpec

    @property
    def notebook_path(self) -> Path:
        return self.folder / self.spec.notebook

    def defaults(self) -> dict[str, Scalar]:
        return {name: p.default for name, p in self.spec.parameters.items()}

    def resolve_parameters(self, overrides: dict[str, Any] | None = None) -> dict[str, Scalar]:
        """Defaults updated with ``overrides``; raises TemplateError naming each bad key."""
        overrides = overrides or {}
        problems = [
            f"parameters.{name}: {problem}"
            for name, value in overrides.items()
            if (problem := _problem(self.spec.parameters, name, value))
        ]
        if problems:
            raise TemplateError(self.slug, problems)
        resolved = self.defaults() | overrides
        for name, value in resolved.items():  # YAML/JSON may give 3 for a float
            if self.spec.parameters[name].type == "float":
                resolved[name] = float(value)
        return resolved


def _format_errors(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (not allowed in template.yaml)"
        problems.append(f"{where}: {message}")
    return problems


def load_template(path: str | Path) -> Template:
    """Load and validate a template folder (or its template.yaml).

    Raises :class:`TemplateError` whose message names the file and the key path of every
    problem, e.g. ``parameters.epochs.default: 'ten' is not of type int``.
    """
    path = Path(path)
    file = path / TEMPLATE_FILE if path.is_dir() else path
    folder = file.parent
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(file, [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise TemplateError(file, [f"{where}: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise TemplateError(file, ["(top level): must be a mapping of keys to values"])
    try:
        spec = TemplateSpec.model_validate(raw)
    except ValidationError as exc:
        raise TemplateError(file, _format_errors(exc)) from exc
    problems = []
    if not re.match(_SLUG, folder.name):
        problems.append(f"(folder): {folder.name!r} is not a valid slug (lowercase, digits, -)")
    if not (folder / spec.notebook).is_file():
        problems.append(f"notebook: {spec.notebook!r} does not exist in {folder}")
    if problems:
        raise TemplateError(file, problems)
    return Template(slug=folder.name, folder=folder, spec=spec)


def discover_templates(root: str | Path, strict: bool = True) -> list[Template]:
    """All templates under ``root`` (one folder level), sorted by slug.

    Folders without a template.yaml (and hidden or ``_`` folders) are ignored. With ``strict``
    an invalid template raises :class:`TemplateError` listing every problem; otherwise invalid
    templates are logged and skipped (what a gallery wants). ``requires`` must name templates
    found under the same root.
    """
    templates, problems = [], []
    for folder in sorted(Path(root).iterdir()):
        if not folder.is_dir() or folder.name[0] in "._" or not (folder / TEMPLATE_FILE).is_file():
            continue
        try:
            templates.append(load_template(folder))
        except TemplateError as exc:
            if strict:
                problems.append(str(exc))
            else:
                log.warning("skipping template: %s", exc)
    slugs = {t.slug for t in templates}
    for template in list(templates):
        missing = [slug for slug in template.spec.requires if slug not in slugs]
        if missing:
            message = f"{template.folder / TEMPLATE_FILE}: requires: {missing} not found"
            if strict:
                problems.append(message)
            else:
                log.warning("skipping template: %s", message)
                templates.remove(template)
    if problems:
        raise TemplateError(root, problems)
    return templates
