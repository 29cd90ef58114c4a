"""The template.yaml schema: real templates load, bad files are rejected with the key path."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEMPLATES

from werkhub.images.templates import TemplateError, discover_templates, load_template

GOOD: dict[str, Any] = {
    "title": "A template",
    "summary": "A paragraph that is long enough to say what this template does for you.",
    "audience": "engineer",
    "notebook": "main.ipynb",
    "image": "pytorch",
    "gpu": "optional",
    "runtime": {"cpu_seconds": 20, "gpu_seconds": 5},
    "parameters": {
        "epochs": {"type": "int", "default": 3, "min": 1, "max": 10, "description": "Epochs"},
        "rate": {"type": "float", "default": 0.1, "description": "Learning rate"},
        "device_name": {
            "type": "str",
            "default": "auto",
            "choices": ["auto", "cpu"],
            "description": "Device",
        },
        "results_path": {"type": "str", "default": "", "description": "JSON output"},
        "mlflow_experiment": {"type": "str", "default": "x", "description": "Experiment"},
    },
    "smoke_parameters": {"epochs": 1},
    "metrics": {"f1": "Macro F1"},
    "gates": [{"metric": "f1", "op": ">=", "value": 0.9}],
    "tags": ["vision"],
}


def write(root: Path, data: Any, slug: str = "my-template", notebook: bool = True) -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    (folder / "template.yaml").write_text(text)
    if notebook:
        (folder / "main.ipynb").write_text("{}")
    return folder


def with_change(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the value at a dotted key path replaced (``...`` deletes it)."""
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    index: int | str = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[index]
    else:
        node[index] = value
    return data


def test_the_shipped_templates_are_valid() -> None:
    templates = discover_templates(TEMPLATES)
    slugs = {t.slug for t in templates}
    assert {"quality-inspection", "predictive-maintenance", "heat-treatment-twin"} <= slugs
    assert {t.spec.audience for t in templates} == {"engineer", "student"}
    for t in templates:
        assert t.notebook_path.is_file()
        assert set(t.spec.requires) <= slugs


def test_good_template_loads(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, GOOD))
    assert t.slug == "my-template"
    assert t.defaults()["epochs"] == 3
    assert t.spec.gates[0].passes(0.95) and not t.spec.gates[0].passes(0.5)
    assert load_template(write(tmp_path, GOOD) / "template.yaml").slug == "my-template"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("colour", "red", "colour: unknown key"),
        ("runtime.cpu_minutes", 3, "runtime.cpu_minutes: unknown key"),
        ("parameters.epochs.unit", "s", "parameters.epochs.unit: unknown key"),
        ("audience", "manager", "audience: Input should be 'engineer' or 'student'"),
        ("gpu", "maybe", "gpu: Input should be"),
        ("title", ..., "title: Field required"),
        ("runtime.cpu_seconds", -1, "runtime.cpu_seconds: Input should be greater than 0"),
        ("parameters.epochs.default", "ten", "parameters.epochs: default 'ten' is not of type"),
        ("parameters.epochs.default", True, "parameters.epochs: default True is not of type int"),
        ("parameters.epochs.default", 50, "parameters.epochs: default 50 is above the maximum 10"),
        ("parameters.epochs.type", "complex", "parameters.epochs.type: Input should be"),
        ("parameters.rate.min", 1.0, "parameters.rate: default 0.1 is below the minimum 1"),
        ("parameters.device_name.default", "gpu", "is not one of ['auto', 'cpu']"),
        ("parameters.device_name.min", 1, "parameters.device_name: min/max only apply"),
        ("parameters.results_path", ..., "parameters: every template takes the parameters"),
        ("notebook", "../other.ipynb", "notebook: must be a relative path"),
        ("notebook", "main.py", "notebook: must be a relative path"),
        ("image", "Not An Image!", "image: String should match pattern"),
        ("summary", "Too short.", "summary: String should have at least 40 characters"),
        ("tags", [], "tags: List should have at least 1 item"),
        ("tags.0", "Upper Case", "tags.0: String should match pattern"),
        ("smoke_parameters.epochs", 0, "smoke_parameters.epochs: 0 is below the minimum 1"),
        ("smoke_parameters.batch", 4, "smoke_parameters.batch: unknown parameter"),
        ("gates.0.metric", "accuracy", "gates.0.metric: 'accuracy' is not listed under metrics"),
        ("gates.0.op", "=>", "gates.0.op: Input should be"),
        ("runtime.gpu_seconds", ..., "runtime.gpu_seconds: required when gpu is 'optional'"),
    ],
)
def test_bad_templates_name_the_key_path(
    tmp_path: Path, path: str, value: Any, message: str
) -> None:
    folder = write(tmp_path, with_change(path, value))
    with pytest.raises(TemplateError) as error:
        load_template(folder)
    assert message in str(error.value)
    assert str(folder / "template.yaml") in str(error.value)


def test_summary_must_be_one_paragraph(tmp_path: Path) -> None:
    data = with_change("summary", "First paragraph, long enough.\n\nSecond paragraph here too.")
    with pytest.raises(TemplateError, match="summary: the summary must be a single paragraph"):
        load_template(write(tmp_path, data))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = with_change("colour", "red")
    data["audience"] = "manager"
    with pytest.raises(TemplateError) as error:
        load_template(write(tmp_path, data))
    assert len(error.value.problems) == 2


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="line 2"):
        load_template(write(tmp_path, "title: x\n  bad: [indent\n", slug="broken"))
    with pytest.raises(TemplateError, match="must be a mapping"):
        load_template(write(tmp_path, "- a list\n", slug="listy"))
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "missing")
    with pytest.raises(TemplateError, match=r"notebook: 'main\.ipynb' does not exist"):
        load_template(write(tmp_path, GOOD, slug="no-notebook", notebook=False))
    with pytest.raises(TemplateError, match=r"\(folder\): 'Bad_Name' is not a valid slug"):
        load_template(write(tmp_path, GOOD, slug="Bad_Name"))


def test_resolve_parameters(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, GOOD))
    resolved = t.resolve_parameters({"epochs": 5, "rate": 1})
    assert resolved["epochs"] == 5 and resolved["device_name"] == "auto"
    assert resolved["rate"] == 1.0 and isinstance(resolved["rate"], float)
    with pytest.raises(TemplateError) as error:
        t.resolve_parameters({"epochs": 0, "nope": 1, "rate": "fast"})
    text = str(error.value)
    assert "parameters.epochs: 0 is below the minimum 1" in text
    assert "parameters.nope: unknown parameter" in text
    assert "parameters.rate: 'fast' is not of type float" in text


def test_discover_templates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, GOOD, slug="b-template")
    write(tmp_path, {**GOOD, "audience": "student", "requires": ["b-template"]}, slug="a-course")
    (tmp_path / "_build").mkdir()
    (tmp_path / "not-a-template").mkdir()
    assert [t.slug for t in discover_templates(tmp_path)] == ["a-course", "b-template"]

    write(tmp_path, with_change("audience", "boss"), slug="c-broken")
    with pytest.raises(TemplateError, match=r"c-broken/template\.yaml: audience"):
        discover_templates(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert len(discover_templates(tmp_path, strict=False)) == 2
    assert "c-broken" in caplog.text


def test_requires_must_exist(tmp_path: Path) -> None:
    write(tmp_path, {**GOOD, "requires": ["elsewhere"]}, slug="lonely")
    with pytest.raises(TemplateError, match=r"requires: \['elsewhere'\] not found"):
        discover_templates(tmp_path)
    assert discover_templates(tmp_path, strict=False) == []
