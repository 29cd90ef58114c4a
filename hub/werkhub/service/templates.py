"""Template gallery API: the starter templates as cards, thumbnails and tar.gz archives.

``GET /api/templates`` lists cards, ``GET /api/templates/{slug}/thumbnail.svg`` (or ``.png``
when the template ships a ``thumbnail.png``) draws one, and ``GET /api/templates/{slug}/archive``
packs the template folder, together with the templates it ``requires``, for "Open a copy".
The templates folder is ``WERKHUB_TEMPLATES`` (``services.werkhub.templates_dir``) or the
project's own ``templates/``.
"""

import io
import tarfile
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from werkhub.auth.hub import HubUser
from werkhub.images.templates import Template, discover_templates
from werkhub.service.deps import ApiBase
from werkhub.service.identity import current_user
from werkhub.service.pages.svg import thumbnail

#: never shipped in an archive: build folders, outputs, caches, checkpoints
EXCLUDED = {"_build", "outputs", "output", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
CACHE_SECONDS = 30.0
Slug = Annotated[str, PathParam(min_length=1, max_length=80, description="template slug")]


class TemplateCard(BaseModel):
    slug: str
    title: str
    audience: str
    runtime_minutes: float
    gpu: str
    summary: str
    tags: list[str]
    image: str
    notebook: str
    requires: list[str]
    thumbnail_url: str


def templates_root(configured: Path | None = None) -> Path:
    """``configured`` (``WERKHUB_TEMPLATES``, see ``werkhub.config.env``), else the project's."""
    if configured is not None:
        return configured
    return Path(__file__).resolve().parents[3] / "templates"


class Catalog:
    """Templates found under ``root``, re-read at most every ``CACHE_SECONDS``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._loaded = 0.0
        self._templates: dict[str, Template] = {}

    def all(self) -> dict[str, Template]:
        if time.monotonic() - self._loaded > CACHE_SECONDS:
            found = discover_templates(self.root, strict=False) if self.root.is_dir() else []
            self._templates = {t.slug: t for t in found}
            self._loaded = time.monotonic()
        return self._templates

    def get(self, slug: str) -> Template:
        template = self.all().get(slug)
        if template is None:
            known = ", ".join(sorted(self.all())) or "none"
            raise HTTPException(404, f"no template '{slug}' (known templates: {known})")
        return template


def runtime_minutes(template: Template) -> float:
    return round(template.spec.runtime.cpu_seconds / 60, 1)


def card(template: Template, api: str) -> TemplateCard:
    spec = template.spec
    return TemplateCard(
        slug=template.slug,
        title=spec.title,
        audience=spec.audience,
        runtime_minutes=runtime_minutes(template),
        gpu=spec.gpu,
        summary=spec.summary,
        tags=list(spec.tags),
        image=spec.image,
        notebook=spec.notebook,
        requires=list(spec.requires),
        thumbnail_url=f"{api}/templates/{template.slug}/thumbnail."
        + ("png" if (template.folder / "thumbnail.png").is_file() else "svg"),
    )


def _skip(path: Path) -> bool:
    return any(part in EXCLUDED for part in path.parts) or path.name.endswith(EXCLUDED_SUFFIXES)


def pack(templates: list[Template]) -> bytes:
    """tar.gz with one top-level folder per template (its slug); no links, no excluded files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for template in templates:
            # the notebook's jupytext source (templates/build.py) is ours to edit, not theirs
            source = Path(template.spec.notebook).with_suffix(".py")
            for path in sorted(template.folder.rglob("*")):
                rel = path.relative_to(template.folder)
                if _skip(rel) or rel == source or path.is_symlink() or not path.is_file():
                    continue
                info = tar.gettarinfo(str(path), arcname=f"{template.slug}/{rel.as_posix()}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return buffer.getvalue()


router = APIRouter(prefix="/api/templates", tags=["templates"])
User = Annotated[HubUser, Depends(current_user)]


def catalog(request: Request) -> Catalog:
    found = getattr(request.app.state, "templates", None)
    if found is None:
        found = request.app.state.templates = Catalog(
            templates_root(request.app.state.env.templates_dir)
        )
    return found


Cat = Annotated[Catalog, Depends(catalog)]


@router.get("", response_model=list[TemplateCard], summary="Starter templates as cards")
async def list_templates(cat: Cat, user: User, api: ApiBase) -> list[TemplateCard]:
    found = await run_in_threadpool(cat.all)
    return [card(t, api) for t in found.values()]


@router.get("/{slug}", response_model=TemplateCard, summary="One template's card")
async def get_template(cat: Cat, user: User, slug: Slug, api: ApiBase) -> TemplateCard:
    return card(await run_in_threadpool(cat.get, slug), api)


@router.get("/{slug}/thumbnail.svg", summary="Thumbnail generated from the metadata")
async def thumbnail_svg(cat: Cat, user: User, slug: Slug) -> Response:
    t = await run_in_threadpool(cat.get, slug)
    svg = thumbnail(
        t.slug, t.spec.title, t.spec.audience, t.spec.gpu, runtime_minutes(t), t.spec.tags
    )
    return Response(
        svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=300"}
    )


@router.get("/{slug}/thumbnail.png", summary="Thumbnail shipped with the template")
async def thumbnail_png(cat: Cat, user: User, slug: Slug) -> Response:
    t = await run_in_threadpool(cat.get, slug)
    path = t.folder / "thumbnail.png"
    if not path.is_file():
        raise HTTPException(404, f"template '{slug}' ships no PNG; use thumbnail.svg")
    return Response(path.read_bytes(), media_type="image/png")


@router.get(
    "/{slug}/archive",
    summary="tar.gz of the template folder and the templates it requires",
    response_class=Response,
)
async def archive(cat: Cat, user: User, slug: Slug) -> Response:
    t = await run_in_threadpool(cat.get, slug)
    needed = [t] + [cat.get(s) for s in t.spec.requires]
    data = await run_in_threadpool(pack, needed)
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{slug}.tar.gz"'},
    )
