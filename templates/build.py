"""Write (or with --check, verify) the template notebooks from their sources.

Each template's notebook ``<folder>/<name>.ipynb`` (``notebook:`` in its template.yaml) is
edited as ``<folder>/<name>.py``, a jupytext percent-format file: ``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell, and cell metadata sits in the header
(``# %% tags=["parameters"]``, ``# %% jupyter={"source_hidden": true}``). The notebooks are
committed clean: no outputs, no execution counts, stable cell ids, code cells formatted by
ruff; ``--check`` fails when a committed notebook differs from its source.

Usage: python templates/build.py [--check]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import yaml

TEMPLATES = Path(__file__).resolve().parent
ROOT = TEMPLATES.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
# how jupytext records the text file's blank lines; not part of the notebook
LAYOUT_METADATA = ("lines_to_next_cell", "lines_to_end_of_cell_marker")


def notebooks() -> list[Path]:
    """The notebook of every template folder."""
    found = []
    for spec in sorted(TEMPLATES.glob("*/template.yaml")):
        name = yaml.safe_load(spec.read_text(encoding="utf-8"))["notebook"]
        found.append(spec.parent / name)
    return found


def source_of(notebook: Path) -> Path:
    return notebook.with_suffix(".py")


def from_source(source: Path) -> nbformat.NotebookNode:
    """The notebook of a percent-format source, with only what the notebook needs."""
    text = jupytext.read(source, fmt="py:percent")
    cells = []
    for index, cell in enumerate(text.cells):
        metadata = {k: v for k, v in cell.metadata.items() if k not in LAYOUT_METADATA}
        code = cell.cell_type == "code"
        make = nbformat.v4.new_code_cell if code else nbformat.v4.new_markdown_cell
        # stable ids keep regenerated notebooks byte-identical
        cells.append(make(cell.source, metadata=metadata, id=f"cell-{index:02d}"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def ruff(*args: str | Path) -> None:
    config = ("--config", str(ROOT / "pyproject.toml"))
    subprocess.run([sys.executable, "-m", "ruff", *map(str, args), *config], check=True)


def rendered() -> dict[Path, str]:
    """Every notebook and its exact text, imports sorted and code cells formatted by ruff."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for index, notebook in enumerate(notebooks()):
            files[notebook] = Path(tmp) / f"{index}.ipynb"
            nbformat.write(from_source(source_of(notebook)), files[notebook])
        ruff("check", "--quiet", "--fix", "--select", "I", *files.values())
        ruff("format", "--quiet", *files.values())
        return {
            notebook: nbformat.writes(nbformat.read(written, as_version=4)) + "\n"
            for notebook, written in files.items()
        }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    missing = [str(source_of(nb).relative_to(TEMPLATES)) for nb in notebooks()]
    missing = [name for name in missing if not (TEMPLATES / name).is_file()]
    if missing:
        print("notebook sources missing:", *missing, sep="\n  ")
        return 1
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
        print("out of date (run python templates/build.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
