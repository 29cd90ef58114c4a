"""The committed notebooks: clean, generated from their sources, and consistent with
template.yaml (what the gallery and the jobs service read)."""

from __future__ import annotations

import ast
import subprocess
import sys

import nbformat
import papermill
import pytest
from conftest import (
    ALL_TEMPLATES,
    COURSE_SLUGS,
    ENGINEER_SLUGS,
    SLUGS,
    TEMPLATES,
    load_checks,
    template,
)

PYTHON_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_is_stored_without_outputs(slug: str) -> None:
    nb = nbformat.read(template(slug).notebook_path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata


def test_notebooks_match_their_sources() -> None:
    """Regenerating from their jupytext sources (templates/build.py) changes nothing."""
    result = subprocess.run(
        [sys.executable, str(TEMPLATES / "build.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("slug", SLUGS)
def test_parameters_cell_matches_template_yaml(slug: str) -> None:
    spec = template(slug).spec
    nb = nbformat.read(template(slug).notebook_path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    found = papermill.inspect_notebook(str(template(slug).notebook_path))
    assert list(found) == list(spec.parameters)
    for name, info in found.items():
        declared = spec.parameters[name]
        assert info["inferred_type_name"] == declared.type, name
        default = ast.literal_eval(info["default"])
        assert type(default) is PYTHON_TYPES[declared.type], name
        assert default == declared.default, name


@pytest.mark.parametrize("slug", ENGINEER_SLUGS)
def test_engineer_notebook_shows_where_your_data_goes(slug: str) -> None:
    nb = nbformat.read(template(slug).notebook_path, as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert sum("▶ Use your own" in source for source in markdown) == 1
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for needle in ("from tqdm.auto import tqdm", "mlflow.log_params"):
        assert needle in code
    if "import torch" in code:  # PyTorch templates train on the booking's GPU when there is one
        assert "torch.cuda.is_available()" in code


@pytest.mark.parametrize("slug", COURSE_SLUGS)
def test_course_shows_no_solutions(slug: str) -> None:
    """Exercises are checked by ``check()``; no reference solution appears in the notebook."""
    checks = load_checks(slug)
    nb = nbformat.read(template(slug).notebook_path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for key, exercise in checks.course.exercises.items():
        assert f'check("{key}"' in code or f'check(\n    "{key}"' in code, key
        assert f"{exercise.answer} = ...  #" in code, key
        for line in exercise.solution.splitlines():
            if line.strip() and "=" in line:
                assert line.strip() not in code, f"solution of {key} is visible: {line}"


def test_every_template_is_in_the_gallery() -> None:
    folders = {p.parent.name for p in TEMPLATES.glob("*/template.yaml")}
    assert folders == {t.slug for t in ALL_TEMPLATES}
    requirements = (TEMPLATES / "requirements.txt").read_text()
    for package in ("torch==2.13.0", "mlflow", "papermill", "scikit-learn", "tqdm", "ipywidgets"):
        assert package in requirements
