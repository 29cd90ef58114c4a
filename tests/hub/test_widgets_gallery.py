"""gallery() widget and the template API, without a kernel, against a real werkhub."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.support.hub import ROOT, Werkhub
from werkhub.images.templates import discover_templates, load_template
from werkhub.service.templates import pack
from werkhub_widgets import WerkhubClient
from werkhub_widgets.gallery import GalleryWidget, free_name

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
TEMPLATES = discover_templates(ROOT / "templates")


def archive_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def token(werkhub: Werkhub) -> str:
    return werkhub.create_user("gallery-gina")


def make(werkhub: Werkhub, token: str, home: Path) -> GalleryWidget:
    client = WerkhubClient(f"{werkhub.url}/services/werkhub/", token)
    return GalleryWidget(client, home=home, server_prefix="/user/gallery-gina/")


def test_cards_search_and_filters(werkhub: Werkhub, token: str, tmp_path: Path) -> None:
    g = make(werkhub, token, tmp_path)
    assert g.error is None, g.text
    assert sorted(t["slug"] for t in g.templates) == sorted(t.slug for t in TEMPLATES)
    assert len(g.cards.children) == len(TEMPLATES)
    first = g.cards.children[0].children[0].value
    assert "data:image/svg+xml;base64," in first  # thumbnail fetched and embedded
    assert "For engineers" in first or "Course for students" in first
    students = [t.slug for t in TEMPLATES if t.spec.audience == "student"]
    g.audience.value = "student"
    assert {c["slug"] for c in g.filtered()} == set(students)
    assert len(g.cards.children) == len(students)
    g.audience.value = ""
    g.search.value = "Maintenance"
    assert {c["slug"] for c in g.filtered()} == {
        t.slug
        for t in TEMPLATES
        if "maintenance" in (t.spec.title + t.spec.summary).lower()
        or "maintenance" in t.slug
        or "maintenance" in " ".join(t.spec.tags)
    }
    g.search.value = "no such words anywhere"
    assert g.filtered() == [] and "No template matches" in g.cards.children[0].value
    g.search.value = ""
    g.gpu.value = "required"
    assert all(c["gpu"] == "required" for c in g.filtered())


def test_open_a_copy_never_overwrites(werkhub: Werkhub, token: str, tmp_path: Path) -> None:
    g = make(werkhub, token, tmp_path)
    slug = "quality-inspection-course"
    first = g.open_copy(slug)
    assert first == tmp_path / slug / "course.ipynb" and first.is_file(), g.text
    # the engineer template the course imports from lands next to it
    assert (tmp_path / "quality-inspection" / "surfaces.py").is_file()
    assert "builds on" in g.text
    assert "/user/gallery-gina/lab/tree/quality-inspection-course/course.ipynb" in g.links.value
    # work in the first copy
    first.write_text("my own work")
    (tmp_path / "quality-inspection" / "surfaces.py").write_text("# changed by me")
    second = g.open_copy(slug)
    assert second == tmp_path / f"{slug}-2" / "course.ipynb" and second.is_file()
    assert first.read_text() == "my own work"
    assert (tmp_path / "quality-inspection" / "surfaces.py").read_text() == "# changed by me"
    assert f"{slug}-2/course.ipynb" in g.links.value
    # the copy matches the template, and nothing from _build, caches or staging is left
    original = load_template(ROOT / "templates" / slug)
    assert second.read_bytes() == original.notebook_path.read_bytes()
    assert not (tmp_path / slug / "course.py").exists()  # the notebook's source stays ours
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "quality-inspection",
        slug,
        f"{slug}-2",
    ]
    third = g.open_copy("quality-inspection")
    assert third == tmp_path / "quality-inspection-2" / "inspection.ipynb"


def test_unknown_template_and_errors_are_messages(
    werkhub: Werkhub, token: str, tmp_path: Path
) -> None:
    g = make(werkhub, token, tmp_path)
    assert g.open_copy("nope") is None and "No template 'nope'" in g.text
    g.templates.append({**g.templates[0], "slug": "vanished", "notebook": "x.ipynb"})
    assert g.open_copy("vanished") is None
    assert "Not found" in g.text and "no template 'vanished'" in g.text
    assert list(tmp_path.iterdir()) == []  # nothing half-unpacked
    bad = GalleryWidget(WerkhubClient(f"{werkhub.url}/services/werkhub/", "wrong"), home=tmp_path)
    assert "Not logged in" in bad.text and bad.templates == []


def test_template_api(werkhub: Werkhub, token: str) -> None:
    with werkhub.client(token) as api:
        cards = api.get(f"{API}/templates").json()
        assert {c["slug"] for c in cards} == {t.slug for t in TEMPLATES}
        card = next(c for c in cards if c["slug"] == "heat-treatment-twin")
        assert set(card) >= {"slug", "title", "audience", "runtime_minutes", "gpu", "summary"}
        thumb = api.get(card["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/svg+xml"
        assert thumb.text.startswith("<svg") and "http" not in thumb.text.replace(
            "http://www.w3.org/2000/svg", ""
        )
        archive = api.get(f"{API}/templates/heat-treatment-twin/archive")
        assert archive.status_code == 200
        names = archive_names(archive.content)
        assert "heat-treatment-twin/twin.ipynb" in names
        assert all(n.startswith("heat-treatment-twin/") for n in names)
        missing = api.get(f"{API}/templates/does-not-exist/archive")
        assert missing.status_code == 404 and "known templates" in missing.json()["detail"]
    with werkhub.client() as anonymous:
        assert anonymous.get(f"{API}/templates").status_code == 401


def test_pack_skips_build_outputs_caches_and_links(tmp_path: Path) -> None:
    src = ROOT / "templates" / "predictive-maintenance"
    folder = tmp_path / "predictive-maintenance"
    folder.mkdir()
    for path in src.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    for junk in ("__pycache__/x.pyc", "_build/out.html", "outputs/run.ipynb", "a.pyc"):
        (folder / junk).parent.mkdir(exist_ok=True)
        (folder / junk).write_text("junk")
    (folder / "link.py").symlink_to("/etc/hostname")
    data = pack([load_template(folder)])
    names = archive_names(data)
    shipped = [p.name for p in src.iterdir() if p.name != "maintenance.py"]  # not the source
    assert sorted(names) == sorted(f"predictive-maintenance/{name}" for name in shipped)


def test_free_name(tmp_path: Path) -> None:
    assert free_name(tmp_path, "a") == tmp_path / "a"
    (tmp_path / "a").mkdir()
    (tmp_path / "a-2").write_text("")
    assert free_name(tmp_path, "a") == tmp_path / "a-3"
