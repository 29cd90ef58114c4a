"""Write (or with --check, verify) the template notebooks from their sources.

Usage: python templates/_build/build.py [--check]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heat_treatment  # noqa: E402
import predictive_maintenance  # noqa: E402
import quality_inspection  # noqa: E402

TEMPLATES = HERE.parent
ROOT = TEMPLATES.parent

NOTEBOOKS: dict[str, Callable[[], nbformat.NotebookNode]] = {
    "quality-inspection/inspection.ipynb": quality_inspection.engineer,
    "quality-inspection-course/course.ipynb": quality_inspection.course,
    "predictive-maintenance/maintenance.ipynb": predictive_maintenance.engineer,
    "predictive-maintenance-course/course.ipynb": predictive_maintenance.course,
    "heat-treatment-twin/twin.ipynb": heat_treatment.engineer,
    "heat-treatment-twin-course/course.ipynb": heat_treatment.course,
}


def rendered() -> dict[Path, str]:
    """Every generated notebook and its exact text, code cells formatted by ruff."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for index, (rel, make) in enumerate(NOTEBOOKS.items()):
            files[TEMPLATES / rel] = Path(tmp) / f"{index}.ipynb"
            nbformat.write(make(), files[TEMPLATES / rel])
        config = ["--config", str(ROOT / "pyproject.toml")]
        ruff = [sys.executable, "-m", "ruff"]
        subprocess.run(
            [
                *ruff,
                "check",
                "--quiet",
                "--fix",
                "--select",
                "I",
                *config,
                *map(str, files.values()),
            ],
            check=True,
        )
        subprocess.run(
            [*ruff, "format", "--quiet", *config, *map(str, files.values())],
            check=True,
        )
        out = {
            target: nbformat.writes(nbformat.read(tmp_file, as_version=4)) + "\n"
            for target, tmp_file in files.items()
        }
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in rendered().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(str(path.relative_to(TEMPLATES)))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(TEMPLATES)}")
    if stale:
        print("out of date (run python templates/_build/build.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
