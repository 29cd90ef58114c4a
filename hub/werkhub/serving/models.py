"""Registered model versions for endpoints: resolved and fetched from werkhub's private
MLflow server as its administrator, after checking that the caller may read the model.

A version is downloaded once (MLflow's own artifact client, in a child process with the
administrator's credentials in its environment only) into the state folder and kept
while an endpoint serves it; the registered input example (``serving_input_example.json``,
written by MLflow when a model is logged with ``input_example``) is the smoke request of
every rollout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from werkhub.config.paths import StatePaths
from werkhub.errors import Invalid, NotFound, Unavailable, Upstream
from werkhub.serving.store import Viewer
from werkhub.tracking.accounts import REGISTERED_MODEL, MlflowAdmin, MlflowAdminError
from werkhub.tracking.identity import GATEWAY_ADMIN, GatewaySecrets

EXAMPLE_FILE = "serving_input_example.json"
DOWNLOAD = (
    "import sys, mlflow.artifacts as a; "
    "a.download_artifacts(artifact_uri=sys.argv[1], dst_path=sys.argv[2])"
)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    source: str


class ModelSource:
    """Where endpoints get their models: the private MLflow server of this site.

    The cache is private to werkhub (folders 0700, files 0600) unless ``shared``: the
    local backend gives each replica its own copy inside the owner's folder, so no other
    user's code can read a cached model by guessing its path (which matters where user code
    runs under its own uid without bubblewrap). Only the Docker backend, whose containers
    read the bind-mounted cache as uid 1000 and see nothing else of the host, needs the
    files readable (``shared=True``)."""

    def __init__(
        self, state: StatePaths, python: str = sys.executable, *, shared: bool = False
    ) -> None:
        self.state = state
        self.python = python
        self.shared = shared
        self.folder = state.root / "endpoints" / "models"
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _address(self) -> tuple[str, GatewaySecrets]:
        try:
            address = json.loads((self.state.mlflow / "internal.json").read_text())
            keys = GatewaySecrets.load(self.state.secrets)
        except (OSError, ValueError, KeyError):
            raise Unavailable("MLflow is not running here (disabled or still starting).") from None
        return address["url"] + address["prefix"], keys

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[MlflowAdmin]:
        base, keys = self._address()
        admin = MlflowAdmin(base, keys)
        try:
            yield admin
        except (MlflowAdminError, httpx.HTTPError) as exc:
            raise Upstream(f"MLflow did not answer as expected: {exc}") from None
        finally:
            await admin.aclose()

    async def resolve(
        self, viewer: Viewer, name: str, alias: str | None, version: str | None
    ) -> ModelVersion:
        """The version ``alias`` points to (or ``version``) if ``viewer`` may read the
        model; NotFound for a model that does not exist or is not theirs to read."""
        missing = f"No registered model '{name}' (or you may not read it)."
        async with self.admin() as admin:
            if not viewer.admin:
                permission = await admin.permission(viewer.name, name, REGISTERED_MODEL)
                if permission in ("NO_PERMISSIONS", "DENY"):
                    raise NotFound(missing, field="model")
            if await admin.registered_model(name) is None:
                raise NotFound(missing, field="model")
            found = await admin.model_version(name, version=version, alias=alias)
        if found is None:
            what = f"alias '{alias}'" if alias is not None else f"version {version}"
            raise Invalid(f"registered model '{name}' has no {what}", field="model")
        return ModelVersion(
            name=name,
            version=str(found["version"]),
            run_id=str(found.get("run_id") or ""),
            source=str(found.get("source") or ""),
        )

    def path(self, name: str, version: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in name)
        return self.folder / safe / version

    async def fetch(self, model: ModelVersion, timeout: float = 600) -> Path:
        """The folder holding the version's ``MLmodel`` (downloaded the first time)."""
        target = self.path(model.name, model.version)
        if (target / "MLmodel").is_file():
            return target
        lock = self._locks.setdefault((model.name, model.version), asyncio.Lock())
        async with lock:
            if (target / "MLmodel").is_file():
                return target
            base, keys = self._address()
            partial = target.with_name(f".{target.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True, mode=0o700)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(partial),
                "MLFLOW_TRACKING_URI": base,
                "MLFLOW_TRACKING_USERNAME": GATEWAY_ADMIN,
                "MLFLOW_TRACKING_PASSWORD": keys.admin_password,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
            }
            uri = f"models:/{model.name}/{model.version}"
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-c",
                DOWNLOAD,
                uri,
                str(partial),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                proc.kill()
                raise Upstream(f"fetching {uri} took longer than {timeout:.0f} s") from None
            found = next(iter(sorted(partial.rglob("MLmodel"), key=lambda p: len(p.parts))), None)
            if proc.returncode != 0 or found is None:
                shutil.rmtree(partial, ignore_errors=True)
                last = out.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
                raise Upstream(f"could not fetch {uri} from MLflow: {last[0][:300]}")
            shutil.rmtree(target, ignore_errors=True)
            if self.shared:
                readable(found.parent)
            else:
                private(found.parent, self.folder)
            found.parent.rename(target)
            shutil.rmtree(partial, ignore_errors=True)
            return target


def readable(folder: Path) -> None:
    """Model files readable by the uid a scoring server runs as (a container's 1000);
    the folders above stay passable only, never listable (0711)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    os.chmod(folder, 0o755)
    probe = folder.parent
    while probe.name and probe.name != "endpoints":
        os.chmod(probe, 0o711)
        probe = probe.parent
    if probe.name == "endpoints":
        os.chmod(probe, 0o711)


def private(folder: Path, top: Path) -> None:
    """Model files for werkhub alone: files 0600, folders 0700 from ``folder`` up to the
    cache's ``top`` (``mkdir(parents=True)`` made the folders above with the umask's mode)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    probe = folder
    while True:
        os.chmod(probe, 0o700)
        if probe == top or probe.parent == probe or not probe.is_relative_to(top):
            return
        probe = probe.parent


def input_example(model_dir: Path) -> bytes | None:
    """The registered input example as a scoring request body (JSON), or None."""
    path = model_dir / EXAMPLE_FILE
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None
