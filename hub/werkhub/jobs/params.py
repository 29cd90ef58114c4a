"""A notebook's parameters (the cell tagged ``parameters``, as papermill uses it) and the
validation of a job's values against them.

Pure logic (standard library only). The cell is read with :mod:`ast` and never executed:
a default must be a literal (``epochs = 10``, ``name: str = "x"``, lists and dicts of
literals). Any other statement is reported as a problem naming its line, so a person learns
why a name cannot be set from a job. Values reach the kernel as papermill parameters, which
papermill writes as Python literals; never as code.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from werkhub.jobs.errors import SpecError

ParamType = Literal["int", "float", "str", "bool", "list", "dict", "none"]

_ANNOTATIONS: dict[str, ParamType] = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "list": "list",
    "tuple": "list",
    "dict": "dict",
}
_JSON_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "text",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object (dict)",
    "none": "anything",
}


@dataclass(frozen=True)
class ParamInfo:
    """One parameter: its name, type (from the annotation, else from the default) and
    default value (JSON-compatible; tuples become lists)."""

    name: str
    type: ParamType
    default: Any = None
    comment: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default}


@dataclass
class ParametersCell:
    """What the ``parameters`` cell declares, and the statements that could not be read."""

    params: dict[str, ParamInfo] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    found: bool = False


def type_of(value: Any) -> ParamType:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "dict"
    raise TypeError(f"{type(value).__name__} is not a parameter type")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset | bytes | complex):
        raise TypeError(f"a {type(value).__name__} literal is not a supported parameter value")
    return value


def _cell_source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def parameters_cell(notebook_json: dict[str, Any]) -> ParametersCell:
    """Read the first code cell tagged ``parameters`` (papermill's convention)."""
    result = ParametersCell()
    for cell in notebook_json.get("cells") or []:
        tags = (cell.get("metadata") or {}).get("tags") or []
        if cell.get("cell_type") == "code" and "parameters" in tags:
            result.found = True
            _read(_cell_source(cell), result)
            break
    return result


def _read(source: str, result: ParametersCell) -> None:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        result.problems.append(f"line {exc.lineno}: the parameters cell is not valid Python")
        return
    lines = source.splitlines()
    for node in tree.body:
        line = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
        target, annotation, value = _assignment(node)
        if target is None:
            result.problems.append(f"line {node.lineno}: '{line}' is not a simple assignment")
            continue
        try:
            default = _jsonable(ast.literal_eval(value)) if value is not None else None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            result.problems.append(
                f"line {node.lineno}: '{target}' is not set to a literal value "
                "(only numbers, text, True/False/None, lists and dicts are read; the cell "
                "is never executed)"
            )
            continue
        declared = _ANNOTATIONS.get(annotation or "")
        ptype = declared or type_of(default)
        comment = line.partition("#")[2].strip() if "#" in line else ""
        result.params[target] = ParamInfo(target, ptype, default, comment)


def _assignment(node: ast.stmt) -> tuple[str | None, str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name):
            return target.id, None, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        annotation = node.annotation
        name = annotation.id if isinstance(annotation, ast.Name) else None
        if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
            name = annotation.value.id  # list[int] -> list
        return node.target.id, name, node.value
    return None, None, None


def parameters_of(notebook_json: dict[str, Any]) -> dict[str, ParamInfo]:
    """Name -> ParamInfo of the notebook's ``parameters`` cell (empty if it has none).
    Statements that cannot be read are left out; :func:`parameters_cell` lists them."""
    return parameters_cell(notebook_json).params


def _describe(value: Any) -> str:
    try:
        kind = type_of(value)
    except TypeError:
        return type(value).__name__
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{_JSON_NAMES[kind].removeprefix('an ').removeprefix('a ')} {shown}"


def check_value(info: ParamInfo, value: Any) -> Any:
    """``value`` if it fits ``info``'s type (ints widened to float for float parameters);
    else SpecError("parameters.NAME", ...). Booleans are not numbers."""
    where = f"parameters.{info.name}"
    if info.type == "none":
        return _jsonable(value)
    ok = False
    if info.type == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(where, f"{value} is not a finite number")
            return float(value)
    elif info.type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif info.type == "str":
        ok = isinstance(value, str)
    elif info.type == "bool":
        ok = isinstance(value, bool)
    elif info.type == "list":
        ok = isinstance(value, list | tuple)
    elif info.type == "dict":
        ok = isinstance(value, dict)
    if not ok:
        raise SpecError(
            where,
            f"expected {_JSON_NAMES[info.type]} (the notebook's default is "
            f"{info.default!r}), got {_describe(value)}",
        )
    return _jsonable(value)


def validate_parameters(declared: dict[str, ParamInfo], values: dict[str, Any]) -> dict[str, Any]:
    """The job's ``values`` checked against the notebook's ``declared`` parameters:
    unknown names and wrong types raise SpecError naming ``parameters.NAME``. Returns the
    values as they go to papermill (floats for float parameters)."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        info = declared.get(name)
        if info is None:
            known = ", ".join(sorted(declared)) or "none (it has no cell tagged 'parameters')"
            raise SpecError(
                f"parameters.{name}",
                f"the notebook has no parameter '{name}'; it declares: {known}",
            )
        checked[name] = check_value(info, value)
    return checked
