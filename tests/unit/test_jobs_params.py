"""A notebook's parameters cell, read with ast (never executed), and the validation of a
job's values: unknown names and wrong types are refused naming parameters.NAME."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from werkhub.jobs.errors import SpecError
from werkhub.jobs.params import ParamInfo, parameters_cell, parameters_of, validate_parameters

ROOT = Path(__file__).resolve().parents[2]


def notebook(*sources: str, tagged: int = 0) -> dict[str, Any]:
    cells = []
    for i, source in enumerate(sources):
        tags = ["parameters"] if i == tagged else []
        cells.append(
            {"cell_type": "code", "source": source, "metadata": {"tags": tags}, "outputs": []}
        )
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


CELL = """\
epochs = 10  # training epochs
rate: float = 0.5
name = "plant-a"
enabled = False
sizes = (1, 2)
options = {"a": 1}
threshold: int = None
anything = None
shifts: list[int] = [1, 2]
"""


def test_types_and_defaults() -> None:
    params = parameters_of(notebook("import os", CELL, tagged=1))
    assert {n: (p.type, p.default) for n, p in params.items()} == {
        "epochs": ("int", 10),
        "rate": ("float", 0.5),
        "name": ("str", "plant-a"),
        "enabled": ("bool", False),
        "sizes": ("list", [1, 2]),
        "options": ("dict", {"a": 1}),
        "threshold": ("int", None),
        "anything": ("none", None),
        "shifts": ("list", [1, 2]),
    }
    assert params["epochs"].comment == "training epochs"
    assert params["epochs"].as_json() == {"name": "epochs", "type": "int", "default": 10}


def test_non_literals_are_reported_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = (
        f"import pathlib\nx = pathlib.Path({str(marker)!r}).touch()\ny = 1 + 2\n"
        "a = b = 3\nfor i in range(2): pass\nok = 3\n"
    )
    cell = parameters_cell(notebook(source))
    assert cell.found and list(cell.params) == ["ok"]
    assert cell.problems == [
        "line 1: 'import pathlib' is not a simple assignment",
        "line 2: 'x' is not set to a literal value (only numbers, text, True/False/None, "
        "lists and dicts are read; the cell is never executed)",
        "line 3: 'y' is not set to a literal value (only numbers, text, True/False/None, "
        "lists and dicts are read; the cell is never executed)",
        "line 4: 'a = b = 3' is not a simple assignment",
        "line 5: 'for i in range(2): pass' is not a simple assignment",
    ]
    assert not marker.exists()
    broken = parameters_cell(notebook("x = (\n"))
    assert broken.problems == ["line 1: the parameters cell is not valid Python"]


def test_no_parameters_cell() -> None:
    cell = parameters_cell(notebook("x = 1", tagged=5))
    assert not cell.found and cell.params == {}
    with pytest.raises(SpecError) as info:
        validate_parameters(cell.params, {"x": 2})
    assert info.value.field == "parameters.x"
    assert "it declares: none (it has no cell tagged 'parameters')" in info.value.message


DECLARED = parameters_of(notebook(CELL))


def test_valid_values_pass_and_ints_widen_to_float() -> None:
    values = {
        "epochs": 3,
        "rate": 1,
        "name": "b",
        "enabled": True,
        "sizes": [3],
        "anything": {"k": [1]},
    }
    checked = validate_parameters(DECLARED, values)
    assert checked == {**values, "rate": 1.0}
    assert isinstance(checked["rate"], float)
    assert validate_parameters(DECLARED, {}) == {}


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        (
            {"epoch": 3},
            "parameters.epoch",
            "the notebook has no parameter 'epoch'; it declares: anything, enabled, epochs, name",
        ),
        (
            {"epochs": "3"},
            "parameters.epochs",
            "expected an integer (the notebook's default is 10), got text '3'",
        ),
        (
            {"epochs": True},
            "parameters.epochs",
            "expected an integer (the notebook's default is 10), got true or false True",
        ),
        ({"epochs": 2.5}, "parameters.epochs", "expected an integer"),
        ({"rate": False}, "parameters.rate", "expected a number (the notebook's default is 0.5)"),
        ({"rate": float("inf")}, "parameters.rate", "inf is not a finite number"),
        ({"enabled": 1}, "parameters.enabled", "expected true or false"),
        (
            {"name": None},
            "parameters.name",
            "expected text (the notebook's default is 'plant-a'), got anything None",
        ),
        ({"options": [1]}, "parameters.options", "expected an object (dict)"),
        ({"sizes": "1,2"}, "parameters.sizes", "expected a list"),
    ],
)
def test_wrong_names_and_types(values: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_parameters(DECLARED, values)
    assert info.value.field == field
    assert info.value.message.startswith(message)


def test_template_notebooks_declare_what_template_yaml_says() -> None:
    import yaml

    for folder in sorted((ROOT / "templates").iterdir()):
        if not (folder / "template.yaml").exists():
            continue
        meta = yaml.safe_load((folder / "template.yaml").read_text())
        cell = parameters_cell(json.loads((folder / meta["notebook"]).read_text()))
        assert cell.problems == [], folder.name
        declared = {n: p.type for n, p in cell.params.items()}
        assert declared == {n: p["type"] for n, p in meta["parameters"].items()}, folder.name
        validate_parameters(cell.params, meta["smoke_parameters"])


def test_paraminfo_is_plain_data() -> None:
    assert ParamInfo("a", "int", 1) == ParamInfo("a", "int", 1, "")
