"""LAYOUT.md dependency rules that import-linter does not express: nothing imports tests/ or
bench/, and the notebook side stays free of hub-side and heavy imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "hub", ROOT / "extensions", ROOT / "templates"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_imports_tests_or_bench() -> None:
    offenders = []
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            for name in imported_modules(path):
                if name.split(".")[0] in ("tests", "bench"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_widgets_never_import_the_hub_side() -> None:
    for path in (ROOT / "extensions").rglob("*.py"):
        assert not any(n.split(".")[0] == "werkhub" for n in imported_modules(path)), path


def test_modules_stay_small() -> None:
    for path in (ROOT / "hub" / "werkhub").rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 600, f"{path.relative_to(ROOT)} has {lines} lines; split it"
