"""Container tier: the curated images (images/catalog.yaml), built offline once per session
FROM a debootstrap Debian image, each tested in the docker-stacks manner: a child image runs its
ancestors' tests too. Containers use the host network and bind 127.0.0.1.

Cached between sessions: the Debian root filesystem and the wheelhouse under .cache/images/,
and the images themselves in the engine's storage, reused while their inputs are unchanged
(``WERKHUB_REBUILD_IMAGES=1`` forces a build; the engine's layer cache still applies).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.containers.harness import Server, ensure_images, fake_hub, start_server, stop_server
from tests.support.summary import note
from werkhub.images.catalog import (
    build_project_wheel,
    cached_wheelhouse,
    debian_base,
    default_cache_dir,
    load_catalog,
)
from werkhub.images.engine import ContainerError, Engine, detect_engine, start_podman_service

CATALOG = load_catalog()
T = TypeVar("T")
IMAGES = [spec.name for spec in CATALOG.build_order()]


@pytest.fixture(scope="session")
def engine() -> Engine:
    if not (shutil.which("podman") or shutil.which("docker")):
        pytest.skip("container tier: neither podman nor docker is installed (make system-deps)")
    try:
        return detect_engine()
    except ContainerError as exc:
        pytest.skip(f"container tier: {exc}")


@dataclass
class BuiltImages:
    tags: dict[str, str]
    built: list[str]  # names built in this session (the rest were reused)
    seconds: float
    steps: dict[str, float]  # seconds per step: debian, wheelhouse, wheel, each image built


def _timed(steps: dict[str, float], name: str, function: Callable[..., T], *args: Any) -> T:
    began = time.perf_counter()
    try:
        return function(*args)
    finally:
        steps[name] = time.perf_counter() - began


@pytest.fixture(scope="session")
def built_images(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> BuiltImages:
    """Every catalog image, offline from a cached wheelhouse (pip's configured sources only: the
    CPU torch wheel comes from its find-links)."""
    start = time.perf_counter()
    cache = default_cache_dir()
    project = tmp_path_factory.mktemp("project-wheel")
    steps: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:  # debootstrap and pip download overlap
        base = pool.submit(_timed, steps, "debian", debian_base, engine, cache)
        download = partial(cached_wheelhouse, CATALOG, cache, extra_index=False)
        wheels = pool.submit(_timed, steps, "wheelhouse", download)
        pool.submit(_timed, steps, "wheel", build_project_wheel, project).result()
        wheelhouse = wheels.result()
        try:
            root_base = base.result()
        except ContainerError as exc:
            pytest.skip(f"container tier: no base image: {exc}")
    rebuild = os.environ.get("WERKHUB_REBUILD_IMAGES") == "1"
    result = ensure_images(engine, CATALOG, root_base, wheelhouse, project, rebuild=rebuild)
    seconds = time.perf_counter() - start
    steps |= {name: took for name, (_, took) in result.items() if took is not None}
    built = [name for name, (_, took) in result.items() if took is not None]
    detail = ", ".join(f"{name} {took:.1f} s" for name, took in steps.items())
    note(request.config, f"containers: images ready in {seconds:.1f} s ({detail})")
    return BuiltImages({name: tag for name, (tag, _) in result.items()}, built, seconds, steps)


@pytest.fixture(scope="session", params=IMAGES)
def image(request: pytest.FixtureRequest) -> str:
    """Each catalog image in turn; tests that take it run once per image."""
    return request.param


@pytest.fixture(scope="session")
def tag(image: str, built_images: BuiltImages) -> str:
    return built_images.tags[image]


@pytest.fixture(scope="session")
def hub_api() -> Iterator[str]:
    with fake_hub() as url:
        yield url


@pytest.fixture(scope="session")
def server(engine: Engine, image: str, tag: str, hub_api: str) -> Iterator[Server]:
    """The image's default command (jupyterhub-singleuser) serving /user/tester/."""
    running = start_server(engine, image, tag, hub_api)
    yield running
    stop_server(engine, running)


@pytest.fixture(scope="session")
def podman_api(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """podman's Docker-compatible API on a socket, for tests that drive containers through a
    Docker client (DockerSpawner); the image tests use the CLI and do not need it."""
    if engine.name != "podman":
        pytest.skip("the Docker API comes from docker's own daemon here")
    state = tmp_path_factory.mktemp("podman-api")
    socket = state / "podman.sock"
    process = start_podman_service(engine, socket, state / "service.log")
    try:
        yield socket
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()
            process.wait()
