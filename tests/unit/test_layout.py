"""LAYOUT.md dependency rules that import-linter does not express: nothing imports tests/ or
bench/, and the notebook side stays free of hub-side and heavy imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
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


def import_cycles(package: str) -> list[list[str]]:
    """Groups of modules of ``package`` that import each other, directly or not (Tarjan's
    strongly connected components over grimp's import graph; lazy imports count too)."""
    import grimp

    graph = grimp.build_graph(package)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in graph.modules:
                continue
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return cycles


#: circles still to break (issue 13: booking services composed; cron from a library); the
#: list may only shrink, and any new circle fails
KNOWN_CIRCLES: list[list[str]] = []


def test_no_import_circles() -> None:
    assert sorted(import_cycles("werkhub")) == KNOWN_CIRCLES
    assert import_cycles("werkhub_widgets") == []


def test_every_package_says_what_it_owns() -> None:
    for init in (ROOT / "hub" / "werkhub").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(ROOT)} needs a docstring"


HTTP_CLIENTS = ("httpx.Client(", "httpx.AsyncClient(", "urlopen(", "AsyncHTTPClient(")


def test_every_http_client_comes_from_the_helper() -> None:
    """werkhub/http.py (hub side) and werkhub_widgets/http.py (notebook side, which may not
    import the hub package) build every HTTP client; nothing else makes its own."""
    offenders = []
    for folder in (ROOT / "hub" / "werkhub", ROOT / "extensions", ROOT / "templates"):
        for path in folder.rglob("*.py"):
            if path.name == "http.py":
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {c}" for c in HTTP_CLIENTS if c in text]
    assert offenders == []


#: what runs inside a user image (the job runner of container jobs, the server extension)
IMAGE_SIDE_ENTRIES = ("werkhub.jobs.run.execute", "werkhub_widgets.serverext")


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in requirements}


def test_the_image_side_needs_only_what_user_images_install() -> None:
    """User images install werkhub's ``notebook`` extra and images/base/requirements.txt, not the
    ``hub`` extra: importing the job runner there must not need a hub-only distribution (a
    cron library imported through the job spec once failed every container job)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    base = (ROOT / "images" / "base" / "requirements.txt").read_text().splitlines()
    image = _requirement_names(meta["dependencies"] + extras["notebook"])
    image |= _requirement_names([line for line in base if line.strip() and line[0] != "#"])
    image |= {"mlflow"} if "mlflow-skinny" in image else set()  # same import name
    hub_only = _requirement_names(extras["hub"]) - image
    modules = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if {d.lower() for d in dists} & hub_only
    }
    assert "cronsim" in modules  # the list is computed, not empty
    program = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {sorted(modules)!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed in user images')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for entry in {IMAGE_SIDE_ENTRIES!r}:\n"
        "    __import__(entry)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
