"""Notebook paths stay inside the owner's home: absolute paths, '..' and symlinks anywhere
on the way are refused, checked against real files and links in a temporary home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from werkhub.jobs.errors import SpecError
from werkhub.jobs.paths import resolve_notebook


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "homes" / "alice"
    (home / "reports").mkdir(parents=True)
    (home / "reports" / "daily.ipynb").write_text("{}")
    (home / "top.ipynb").write_text("{}")
    (home / "notes.txt").write_text("x")
    (home / "folder.ipynb").mkdir()
    other = tmp_path / "homes" / "bob"
    other.mkdir()
    (other / "secret.ipynb").write_text("{}")
    (home / "link.ipynb").symlink_to(other / "secret.ipynb")
    (home / "bobs").symlink_to(other)
    (home / "inner.ipynb").symlink_to(home / "top.ipynb")  # even a link that stays inside
    return home


def test_accepts_notebooks_in_home(home: Path) -> None:
    assert resolve_notebook(home, "reports/daily.ipynb") == home / "reports" / "daily.ipynb"
    assert resolve_notebook(home, "./top.ipynb") == home / "top.ipynb"
    assert resolve_notebook(home, "reports/daily.ipynb").is_absolute()


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        ("/etc/passwd.ipynb", "'/etc/passwd.ipynb' is absolute"),
        ("~/top.ipynb", "is absolute"),
        ("../bob/secret.ipynb", "'../bob/secret.ipynb' leaves your home folder"),
        ("reports/../../bob/secret.ipynb", "leaves your home folder"),
        ("link.ipynb", "'link.ipynb' is a symbolic link"),
        ("bobs/secret.ipynb", "'bobs' is a symbolic link"),
        ("inner.ipynb", "'inner.ipynb' is a symbolic link"),
        ("notes.txt", "'notes.txt' is not a notebook"),
        ("missing.ipynb", "'missing.ipynb' does not exist in your home folder"),
        ("top.ipynb/x.ipynb", "'top.ipynb' is not a folder"),
        ("folder.ipynb", "'folder.ipynb' is not a regular file"),
        ("", "empty"),
        ("a\\..\\b.ipynb", "contains characters not allowed"),
    ],
)
def test_refusals(home: Path, rel: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve_notebook(home, rel)
    assert info.value.field == "notebook"
    assert message in info.value.message


def test_home_reached_through_a_link_is_fine(home: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    os.symlink(home, alias)
    assert resolve_notebook(alias, "top.ipynb") == alias / "top.ipynb"
