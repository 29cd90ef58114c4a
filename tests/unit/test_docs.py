"""docs/ belongs to the repository: its generated parts match the code, its links resolve,
and nothing in the product's documentation points outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "templates").glob("*.md")),
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_generated_docs_match_the_code() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_cover_the_issue_topics() -> None:
    names = {p.name for p in (ROOT / "docs").glob("*")}
    assert {"architecture.md", "configuration.md", "operations.md", "api.md"} <= names
    assert "openapi.json" in names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("architecture.md", "configuration.md", "operations.md", "api.md"):
        assert f"docs/{name}" in readme, name


def test_relative_links_resolve() -> None:
    broken = []
    for doc in PRODUCT_DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_nothing_points_outside_the_repository() -> None:
    for doc in PRODUCT_DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text, doc
        assert "LAYOUT.md" not in text, doc
