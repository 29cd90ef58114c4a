"""Curated user images: the catalog (``images/catalog.yaml``), build order, offline wheelhouses
and builds with docker or podman. The command line is :mod:`werkhub.cli.images`.

An offline build installs from a wheelhouse alone (``PIP_NO_INDEX=1``) with the build's network
switched off: how air-gapped sites build, and how machines build whose containers cannot verify
TLS. A wheelhouse is made on a connected machine with :func:`create_wheelhouse`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from werkhub.images.engine import ContainerError, Engine, run

SOURCE_ROOT = Path(__file__).resolve().parents[3]  # the checkout, when run from source
TARGET_PYTHON = "3.11.2"  # Debian 12's python3; any CPython 3.11 image shares the cp311 ABI
TARGET_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
DEBIAN_TAG = "localhost/werkhub-debian:bookworm"
DEBIAN_PACKAGES = "python3,python3-venv,ca-certificates"
DEFAULT_PREFIX = "werkhub/"
DEFAULT_TAG = "latest"
Flavour = Literal["cpu", "cuda"]
_SLUG = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"
_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class ImageError(ContainerError):
    """A catalog that does not validate, or an image build step that cannot go on."""


class ImageSpec(BaseModel):
    """One curated image, as listed in catalog.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: Annotated[str, Field(min_length=1)]
    parent: str | None = None
    base_image: str | None = None
    gpu: bool = False
    packages: list[Annotated[str, Field(pattern=_MODULE)]] = []
    commands: list[Annotated[str, Field(pattern=r"^[\w.+-]+$")]] = []
    extra_index_url: dict[Flavour, Annotated[str, Field(pattern=r"^https?://")]] = {}

    @field_validator("name", "parent")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_SLUG, value):
            raise ValueError(f"'{value}': use 2-40 lowercase letters, digits and '-'")
        return value

    @model_validator(mode="after")
    def _root_or_child(self) -> ImageSpec:
        if self.parent is None and not self.base_image:
            raise ValueError("a root image (no parent) needs base_image")
        if self.parent is not None and self.base_image:
            raise ValueError("base_image is for root images; a child is built FROM its parent")
        if "cuda" in self.extra_index_url and not self.gpu:
            raise ValueError("extra_index_url.cuda needs gpu: true")
        return self


class Catalog(BaseModel):
    """The image catalog; ``folder`` holds one sub-folder per image."""

    model_config = ConfigDict(extra="forbid")

    images: Annotated[list[ImageSpec], Field(min_length=1)]
    _folder: Path = PrivateAttr(default=Path("images"))

    @model_validator(mode="after")
    def _graph(self) -> Catalog:
        names = [image.name for image in self.images]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"image names must be unique: {', '.join(duplicates)}")
        by_name = {image.name: image for image in self.images}
        for image in self.images:
            seen = [image.name]
            parent = image.parent
            while parent is not None:
                if parent not in by_name:
                    raise ValueError(
                        f"image '{seen[-1]}': parent '{parent}' is not in the catalog "
                        f"(images: {', '.join(names)})"
                    )
                if parent in seen:
                    raise ValueError(f"parent cycle: {' -> '.join([*seen, parent])}")
                seen.append(parent)
                parent = by_name[parent].parent
        return self

    @property
    def folder(self) -> Path:
        return self._folder

    def get(self, name: str) -> ImageSpec:
        for image in self.images:
            if image.name == name:
                return image
        known = ", ".join(image.name for image in self.images)
        raise ImageError(f"no image '{name}' in the catalog (images: {known})")

    def lineage(self, name: str) -> list[ImageSpec]:
        """The image and its ancestors, root first."""
        chain = [self.get(name)]
        while chain[0].parent is not None:
            chain.insert(0, self.get(chain[0].parent))
        return chain

    def build_order(self, names: Sequence[str] = ()) -> list[ImageSpec]:
        """The named images (all when none) with their ancestors, parents before children."""
        wanted = list(names) or [image.name for image in self.images]
        order: list[ImageSpec] = []
        for name in wanted:
            order += [spec for spec in self.lineage(name) if spec not in order]
        return order

    def packages(self, name: str) -> list[str]:
        """Python modules the image promises: its own and every ancestor's."""
        return _unique(p for spec in self.lineage(name) for p in spec.packages)

    def commands(self, name: str) -> list[str]:
        return _unique(c for spec in self.lineage(name) for c in spec.commands)

    def image_dir(self, name: str) -> Path:
        return self.folder / self.get(name).name


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def default_images_dir() -> Path:
    env = os.environ.get("WERKHUB_IMAGES_DIR")
    if env:
        return Path(env)
    source = SOURCE_ROOT / "images"
    return source if (source / "catalog.yaml").is_file() else Path.cwd() / "images"


def default_cache_dir() -> Path:
    env = os.environ.get("WERKHUB_IMAGES_CACHE")
    if env:
        return Path(env)
    if (SOURCE_ROOT / "pyproject.toml").is_file():
        return SOURCE_ROOT / ".cache" / "images"
    return Path.home() / ".cache" / "werkhub" / "images"


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate catalog.yaml and the image folders next to it."""
    path = path or default_images_dir() / "catalog.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ImageError(f"cannot read the image catalog: {exc}") from None
    except yaml.YAMLError as exc:
        raise ImageError(f"{path}: not valid YAML: {exc}") from None
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = _location(raw, error["loc"])
            lines.append(f"  {where}: {error['msg']}")
        raise ImageError(f"{path}: invalid image catalog\n" + "\n".join(lines)) from None
    catalog._folder = path.parent
    problems = []
    for image in catalog.images:
        folder = catalog.image_dir(image.name)
        for needed in ("Dockerfile", "README.md", "requirements.txt"):
            if not (folder / needed).is_file():
                problems.append(f"  image '{image.name}': {folder / needed} is missing")
        dockerfile = folder / "Dockerfile"
        if dockerfile.is_file() and "ARG BASE_IMAGE" not in dockerfile.read_text():
            problems.append(f"  image '{image.name}': {dockerfile} must take ARG BASE_IMAGE")
    if problems:
        raise ImageError(f"{path}: image folders incomplete\n" + "\n".join(problems))
    return catalog


def _location(raw: object, loc: Sequence[int | str]) -> str:
    """``images[1] (pytorch).parent`` from pydantic's ('images', 1, 'parent')."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int):
            parts[-1] += f"[{key}]"
            node = node[key] if isinstance(node, list) and key < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                parts[-1] += f" ({node['name']})"
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


# --- wheelhouses ------------------------------------------------------------------------------


def build_project_wheel(
    dest: Path, source: Path = SOURCE_ROOT, wheelhouse: Path | None = None
) -> Path:
    """Build werkhub's own wheel into ``dest``, replacing older ones there; with a
    ``wheelhouse``, offline (the build backend comes from it)."""
    if not (source / "pyproject.toml").is_file():
        raise ImageError(f"{source} is not a werkhub source tree (no pyproject.toml)")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("werkhub-*.whl"):
        old.unlink()
    offline = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *offline, "-w", dest, source]
    )
    return _one_project_wheel(dest)


def _one_project_wheel(folder: Path) -> Path:
    wheels = sorted(folder.glob("werkhub-*.whl"))
    if len(wheels) != 1:
        found = ", ".join(w.name for w in wheels) or "none"
        raise ImageError(f"{folder}: expected exactly one werkhub wheel, found {found}")
    return wheels[0]


def create_wheelhouse(
    dest: Path,
    catalog: Catalog,
    names: Sequence[str] = (),
    *,
    flavour: Flavour = "cpu",
    extra_index: bool = True,
    source: Path = SOURCE_ROOT,
) -> Path:
    """Download every wheel the named images (and their ancestors) need, for CPython 3.11 on
    x86-64 Linux, plus werkhub's own wheel; ``extra_index=False`` uses only the indexes and
    find-links pip is configured with."""
    specs = catalog.build_order(names)
    wheel = build_project_wheel(dest, source)
    command: list[str | os.PathLike[str]] = [
        *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"),
        *("--python-version", TARGET_PYTHON, "--implementation", "cp"),
        *(arg for platform in TARGET_PLATFORMS for arg in ("--platform", platform)),
        *("-d", dest),
    ]
    for spec in specs:
        command += ["-r", catalog.image_dir(spec.name) / "requirements.txt"]
        url = spec.extra_index_url.get(flavour)
        if extra_index and url:
            command += ["--extra-index-url", url]
    command.append(f"{wheel}[notebook]")
    run(command)
    # the build backend too, so that werkhub's wheel can be rebuilt from source offline
    backend = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]["requires"]
    pip_download = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    run([*pip_download, "-d", dest, *backend])
    return dest


def wheelhouse_key(catalog: Catalog, flavour: Flavour, extra_index: bool) -> str:
    """Changes when anything that decides the wheelhouse's contents changes."""
    digest = hashlib.sha256(f"{TARGET_PYTHON} {TARGET_PLATFORMS} {flavour} {extra_index}".encode())
    digest.update((catalog.folder / "catalog.yaml").read_bytes())
    for spec in catalog.images:
        digest.update((catalog.image_dir(spec.name) / "requirements.txt").read_bytes())
    pyproject = SOURCE_ROOT / "pyproject.toml"
    if pyproject.is_file():
        meta = tomllib.loads(pyproject.read_text())
        project, backend = meta["project"], meta["build-system"]["requires"]
        notebook = project.get("optional-dependencies", {}).get("notebook", [])
        digest.update(repr((project.get("dependencies"), notebook, backend)).encode())
    return digest.hexdigest()[:12]


def cached_wheelhouse(
    catalog: Catalog,
    cache_dir: Path | None = None,
    *,
    flavour: Flavour = "cpu",
    extra_index: bool = True,
) -> Path:
    """A wheelhouse for the whole catalog under the cache folder, downloaded only when the
    requirements changed since the last one."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / f"wheelhouse-{wheelhouse_key(catalog, flavour, extra_index)}"
    if (target / ".complete").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    create_wheelhouse(partial, catalog, flavour=flavour, extra_index=extra_index)
    (partial / ".complete").touch()
    for old in cache_dir.glob("wheelhouse-*"):
        if old != partial:
            shutil.rmtree(old)  # one wheelhouse at a time
    partial.rename(target)
    return target


# --- base images without a registry -----------------------------------------------------------


def debian_base(
    engine: Engine,
    cache_dir: Path | None = None,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    tag: str = DEBIAN_TAG,
) -> str:
    """A minimal Debian image with Python made by debootstrap (root only) and imported into the
    engine; the root filesystem is kept as a tarball in the cache folder for the next import."""
    if engine.image_exists(tag):
        return tag
    tarball = debian_tarball(cache_dir, suite=suite, mirror=mirror)
    engine.run("import", "--change", 'CMD ["/bin/bash"]', tarball, tag)
    return tag


def debian_tarball(
    cache_dir: Path | None = None, *, suite: str = "bookworm", mirror: str | None = None
) -> Path:
    """The debootstrap root filesystem of :func:`debian_base` as a tarball in the cache folder,
    made once (the only step that needs Debian's mirror: ``.ci/run`` makes it before the
    offline test run)."""
    cache_dir = cache_dir or default_cache_dir()
    tarball = cache_dir / f"debian-{suite}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise ImageError("a debootstrap base needs root and debootstrap (apt-get install)")
    rootfs = cache_dir / f"rootfs-{suite}.partial"
    shutil.rmtree(rootfs, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = ["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}"]
    run([*command, suite, rootfs, *([mirror] if mirror else [])])
    # apt's package lists and caches come back with `apt-get update`; ~95 MB less per image
    for junk in ("var/lib/apt/lists", "var/cache/apt"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()
    partial = tarball.with_suffix(".tar.partial")
    run(["tar", "-C", rootfs, "-cf", partial, "."])
    partial.rename(tarball)
    shutil.rmtree(rootfs)
    return tarball


# --- builds -----------------------------------------------------------------------------------


def image_tag(name: str, prefix: str = DEFAULT_PREFIX, tag: str = DEFAULT_TAG) -> str:
    return f"{prefix}{name}:{tag}"


def build_image(
    name: str,
    engine: Engine,
    base_image: str,
    wheelhouse: Path | None,
    *,
    catalog: Catalog | None = None,
    project: Path | None = None,
    flavour: Flavour = "cpu",
    tag: str | None = None,
    no_cache: bool = False,
    labels: Mapping[str, str] | None = None,
    quiet: bool = True,
) -> str:
    """Build one image FROM ``base_image``; with a ``wheelhouse`` offline (no index, no network).

    ``project`` is a folder holding exactly one werkhub wheel: by default one built from the
    source tree, or the one in the wheelhouse when there is no source tree."""
    catalog = catalog or load_catalog()
    spec = catalog.get(name)
    tag = tag or image_tag(name)
    with tempfile.TemporaryDirectory(prefix="werkhub-image-") as scratch:
        if project is None:
            project = Path(scratch) / "project"
            if (SOURCE_ROOT / "pyproject.toml").is_file():
                build_project_wheel(project, wheelhouse=wheelhouse)
            elif wheelhouse is not None:
                project.mkdir()
                shutil.copy2(_one_project_wheel(wheelhouse), project)
            else:
                raise ImageError("no werkhub wheel: build from a source tree or a wheelhouse")
        _one_project_wheel(project)
        if wheelhouse is not None and not wheelhouse.is_dir():
            raise ImageError(f"wheelhouse {wheelhouse} does not exist (werkhub images wheelhouse)")
        wheels = wheelhouse or Path(scratch) / "no-wheelhouse"
        wheels.mkdir(exist_ok=True)
        args: list[str | os.PathLike[str]] = ["build", "--tag", tag]
        if engine.name == "podman":
            args += ["--format", "docker"]  # OCI images drop HEALTHCHECK
        args += ["--build-arg", f"BASE_IMAGE={base_image}"]
        args += ["--build-context", f"wheels={wheels}", "--build-context", f"project={project}"]
        if wheelhouse is not None:
            args += ["--build-arg", "PIP_NO_INDEX=1", "--network", "none"]
        elif spec.extra_index_url.get(flavour):
            args += ["--build-arg", f"PIP_EXTRA_INDEX_URL={spec.extra_index_url[flavour]}"]
        all_labels = {
            "org.opencontainers.image.title": f"werkhub {name}",
            "org.opencontainers.image.description": spec.description,
            "io.werkhub.image": name,
            "io.werkhub.parent": spec.parent or "",
            "io.werkhub.gpu": str(spec.gpu).lower(),
            "io.werkhub.flavour": flavour,
            **(labels or {}),
        }
        args += [a for key, value in all_labels.items() for a in ("--label", f"{key}={value}")]
        if no_cache:
            args.append("--no-cache")
        args += ["--file", catalog.image_dir(name) / "Dockerfile", catalog.image_dir(name)]
        engine.run(*args, quiet=quiet)
    return tag


def build_images(
    names: Sequence[str],
    engine: Engine,
    *,
    catalog: Catalog | None = None,
    wheelhouse: Path | None = None,
    base_image: str | None = None,
    flavour: Flavour = "cpu",
    prefix: str = DEFAULT_PREFIX,
    tag: str = DEFAULT_TAG,
    no_cache: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, str]:
    """Build the named images (all when none) and their ancestors, parents first; root images
    start FROM ``base_image`` or their catalog default. Returns name -> tag."""
    catalog = catalog or load_catalog()
    order = catalog.build_order(names)
    built: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="werkhub-wheel-") as scratch:
        project = None
        if (SOURCE_ROOT / "pyproject.toml").is_file():
            project = Path(scratch)
            build_project_wheel(project, wheelhouse=wheelhouse)
        for index, spec in enumerate(order, 1):
            if spec.parent is None:
                start = base_image or spec.base_image or ""
            else:
                start = built.get(spec.parent) or image_tag(spec.parent, prefix, tag)
            mode = f"offline from {wheelhouse}" if wheelhouse else "online"
            log(f"[{index}/{len(order)}] {image_tag(spec.name, prefix, tag)} FROM {start}, {mode}")
            built[spec.name] = build_image(
                spec.name,
                engine,
                start,
                wheelhouse,
                catalog=catalog,
                project=project,
                flavour=flavour,
                tag=image_tag(spec.name, prefix, tag),
                no_cache=no_cache,
                quiet=quiet,
            )
    return built
