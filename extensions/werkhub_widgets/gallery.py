"""``gallery()``: the starter templates as cards, with search, filters and "Open a copy".

"Open a copy" downloads the template (and the templates it builds on) from the werkhub
service and unpacks it into the home folder under a new name when the folder exists, so
existing work is never overwritten; then it links to (and tries to open) the notebook.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ipywidgets as w

from werkhub_widgets._ui import CSS, Panel, button, esc
from werkhub_widgets.client import WerkhubClient

AUDIENCES = [("All audiences", ""), ("Engineers", "engineer"), ("Students", "student")]
GPU_FILTER = [
    ("Any hardware", ""),
    ("Runs on CPU", "none"),
    ("GPU optional", "optional"),
    ("GPU required", "required"),
]
GPU_TEXT = {"none": "CPU only", "optional": "GPU optional", "required": "GPU required"}


def free_name(home: Path, name: str) -> Path:
    """``home/name``, or ``home/name-2``, ``-3``, ... whichever does not exist yet."""
    candidate, n = home / name, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = home / f"{name}-{n}"
    return candidate


def unpack(data: bytes, home: Path, slug: str) -> tuple[Path, list[str]]:
    """Unpack an archive (top-level folders named by slug) into ``home``.

    The template itself lands in a folder of its own (renamed if taken); templates it needs
    are added next to it only when missing. Returns the folder and the helpers added.
    """
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".werkhub-copy-", dir=home))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        if not (staging / slug).is_dir():
            raise ValueError(f"the archive of '{slug}' holds no folder '{slug}'")
        target = free_name(home, slug)
        os.rename(staging / slug, target)
        added = []
        for extra in sorted(p for p in staging.iterdir() if p.is_dir()):
            if not (home / extra.name).exists():
                os.rename(extra, home / extra.name)
                added.append(extra.name)
        return target, added
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class GalleryWidget(Panel):
    def __init__(
        self,
        client: WerkhubClient | None = None,
        home: str | Path | None = None,
        server_prefix: str | None = None,
        thumbnails: bool = True,
    ) -> None:
        super().__init__(client)
        self.home = Path(home or os.environ.get("HOME") or Path.cwd())
        self.server_prefix = server_prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        self.show_thumbnails = thumbnails
        self.templates: list[dict[str, Any]] = []
        self.opened: list[Path] = []
        self._thumbs: dict[str, str] = {}
        self.search = w.Text(description="Search", placeholder="e.g. vision, maintenance")
        self.audience = w.Dropdown(options=AUDIENCES, value="", description="For")
        self.gpu = w.Dropdown(options=GPU_FILTER, value="", description="Hardware")
        for control in (self.search, self.audience, self.gpu):
            control.observe(lambda _change: self.render(), names="value")
        self.cards = w.GridBox(
            layout=w.Layout(grid_template_columns="repeat(auto-fill, minmax(300px, 1fr))")
        )
        self.links = w.HTML()
        self.out = w.Output()
        self.root.children = [
            w.HTML(f"{CSS}<h3>Template gallery</h3>"),
            self.message,
            w.HBox([self.search, self.audience, self.gpu], layout=w.Layout(flex_flow="row wrap")),
            self.links,
            self.cards,
            self.out,
        ]
        if self.client is not None:
            self.refresh()

    def refresh(self) -> None:
        found = self.act(lambda: self.api("GET", "api/templates"))
        if found is not None:
            self.templates = found
        self.render()

    def filtered(self) -> list[dict[str, Any]]:
        words = self.search.value.lower().split()
        chosen = []
        for t in self.templates:
            if self.audience.value and t["audience"] != self.audience.value:
                continue
            if self.gpu.value and t["gpu"] != self.gpu.value:
                continue
            text = " ".join([t["title"], t["summary"], t["slug"], *t.get("tags", [])]).lower()
            if all(word in text for word in words):
                chosen.append(t)
        return chosen

    def _thumb(self, t: dict[str, Any]) -> str:
        if not self.show_thumbnails or self.client is None:
            return ""
        if t["slug"] not in self._thumbs:
            url = t["thumbnail_url"]
            path = url[url.index("/api/") + 1 :] if "/api/" in url else url
            try:
                data = self.client.raw("GET", path)
            except Exception:
                self._thumbs[t["slug"]] = ""
            else:
                kind = "png" if path.endswith(".png") else "svg+xml"
                encoded = base64.b64encode(data).decode()
                self._thumbs[t["slug"]] = (
                    f"<img src='data:image/{kind};base64,{encoded}' alt='' "
                    "style='width:100%;max-width:320px;border-radius:6px'>"
                )
        return self._thumbs[t["slug"]]

    def _card(self, t: dict[str, Any]) -> Any:
        minutes = t["runtime_minutes"]
        runtime = "under a minute" if minutes < 1 else f"about {minutes:g} min"
        who = "Course for students" if t["audience"] == "student" else "For engineers"
        html = (
            f"<div class='wh-card werkhub-card' data-slug='{esc(t['slug'])}'>{self._thumb(t)}"
            f"<div><b>{esc(t['title'])}</b></div>"
            f"<div><span class='wh-tag'>{who}</span> <span class='wh-tag'>"
            f"{GPU_TEXT.get(t['gpu'], esc(t['gpu']))}</span> <span class='wh-tag'>{runtime}"
            f"</span></div><div style='font-size:12px'>{esc(t['summary'][:220])}"
            f"{'...' if len(t['summary']) > 220 else ''}</div></div>"
        )
        slug = t["slug"]
        return w.VBox(
            [
                w.HTML(html),
                button(
                    "Open a copy",
                    lambda: self.open_copy(slug),
                    f"Copy '{t['title']}' into your home folder and open it",
                    button_style="primary",
                ),
            ]
        )

    def render(self) -> None:
        shown = self.filtered()
        self.cards.children = [self._card(t) for t in shown]
        if self.templates and not shown:
            self.cards.children = [w.HTML("<i>No template matches the search and filters.</i>")]

    def notebook_url(self, notebook: Path) -> str:
        try:
            rel = notebook.relative_to(self.home)
        except ValueError:
            rel = Path(notebook.name)
        return f"{self.server_prefix.rstrip('/')}/lab/tree/{quote(rel.as_posix())}"

    def open_copy(self, slug: str) -> Path | None:
        """Copy template ``slug`` into the home folder; returns the copied notebook."""
        found = {t["slug"]: t for t in self.templates}
        if slug not in found:
            self.fail(f"No template '{slug}' (choose one of: {', '.join(sorted(found))})")
            return None

        def run() -> tuple[Path, list[str]]:
            assert self.client is not None
            data = self.client.raw("GET", f"api/templates/{quote(slug)}/archive")
            return unpack(data, self.home, slug)

        result = self.act(run)
        if result is None:
            return None
        folder, added = result
        notebook = folder / found[slug]["notebook"]
        self.opened.append(notebook)
        url = self.notebook_url(notebook)
        extra = f" (with {', '.join(added)}, which it builds on)" if added else ""
        self.say(f"Copied '{found[slug]['title']}' to {folder.name}/{extra}.")
        self.links.value = (
            f"<div class='werkhub-opened'>Open <a href='{esc(url)}' target='_blank' "
            f"rel='noopener'>{esc(folder.name)}/{esc(found[slug]['notebook'])}</a></div>"
        )
        self._try_open(url)
        return notebook

    def _try_open(self, url: str) -> None:
        """In a live notebook, open the copy in a new tab (the link above stays)."""
        try:
            from IPython import get_ipython
            from IPython.display import Javascript, display
        except ImportError:
            return
        shell = get_ipython()
        if shell is None or not hasattr(shell, "kernel"):
            return
        with self.out:
            display(Javascript(f"window.open({url!r}, '_blank')"))


def gallery(client: WerkhubClient | None = None, **kwargs: Any) -> GalleryWidget:
    """Show the template gallery: ``from werkhub_widgets import gallery; gallery()``."""
    return GalleryWidget(client, **kwargs)
