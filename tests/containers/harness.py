"""Helpers for the container tier: images built once and reused while their inputs are unchanged,
a stand-in for the hub's REST API, and single-user servers started from the images."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from werkhub.images.catalog import Catalog, ImageSpec, build_image, image_tag
from werkhub.images.engine import Engine

INPUTS_LABEL = "io.werkhub.test-inputs"
USER = "tester"
USER_TOKEN = "user-token-for-tests"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, Any]:
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


# --- images ----------------------------------------------------------------------------------


def label(engine: Engine, tag: str, key: str) -> str | None:
    done = subprocess.run(
        engine.command("image", "inspect", "--format", "{{json .Config.Labels}}", tag),
        env=engine.environ(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    return (json.loads(done.stdout) or {}).get(key)


def image_id(engine: Engine, tag: str) -> str:
    return engine.run("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def inputs_digest(
    catalog: Catalog, spec: ImageSpec, start: str, wheelhouse: Path, wheel: Path
) -> str:
    """What decides an image's contents: the image it starts FROM, its folder, its catalog
    entry, the wheelhouse and the parts of the werkhub wheel that run in a user image (other
    hub-side changes do not count)."""
    digest = hashlib.sha256(f"{start}\n{spec.model_dump_json()}\n{wheelhouse.name}".encode())
    folder = catalog.image_dir(spec.name)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            # what runs inside user images: widgets and server extension, the Jupyter
            # config, the job runner (Docker jobs) and the wheel's data (lab extension)
            notebook_side = (
                name.startswith(
                    ("werkhub_widgets/", "werkhub/app/jupyter_config/", "werkhub/jobs/")
                )
                or ".data/" in name
            )
            if notebook_side or name.endswith(".dist-info/METADATA"):
                digest.update(name.encode() + archive.read(name))
    return digest.hexdigest()[:16]


def ensure_images(
    engine: Engine,
    catalog: Catalog,
    root_base: str,
    wheelhouse: Path,
    project: Path,
    rebuild: bool = False,
) -> dict[str, tuple[str, float | None]]:
    """Build every catalog image offline, parents first, unless an image with the same inputs
    exists. Returns name -> (tag, seconds its build took, or None when reused)."""
    result: dict[str, tuple[str, float | None]] = {}
    wheel = next(project.glob("werkhub-*.whl"))
    for spec in catalog.build_order():
        tag = image_tag(spec.name)
        start = root_base if spec.parent is None else result[spec.parent][0]
        digest = inputs_digest(catalog, spec, image_id(engine, start), wheelhouse, wheel)
        if not rebuild and label(engine, tag, INPUTS_LABEL) == digest:
            result[spec.name] = (tag, None)
            continue
        began = time.perf_counter()
        build_image(
            spec.name,
            engine,
            start,
            wheelhouse,
            catalog=catalog,
            project=project,
            tag=tag,
            labels={INPUTS_LABEL: digest},
        )
        result[spec.name] = (tag, time.perf_counter() - began)
    return result


# --- a stand-in for the hub ------------------------------------------------------------------


class _HubAPI(BaseHTTPRequestHandler):
    """The two hub endpoints a single-user server calls: the version check at start-up and
    token resolution (``GET /hub/api/user``) for API requests with a user's token."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/hub/api":
            self._reply(200, {"version": "6.1.1"})
        elif self.path.startswith("/hub/api/user"):
            if self.headers.get("Authorization") != f"token {USER_TOKEN}":
                self._reply(403, {"status": 403, "message": "invalid token"})
                return
            self._reply(200, _user_model())
        else:
            self._reply(404, {"status": 404, "message": "not faked"})

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-JupyterHub-Version", "6.1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def _user_model() -> dict[str, Any]:
    return {
        "kind": "user",
        "name": USER,
        "admin": False,
        "groups": [],
        "scopes": [f"access:servers!user={USER}", f"users:activity!user={USER}"],
        "session_id": None,
    }


@contextmanager
def fake_hub() -> Iterator[str]:
    """Serves the hub API on 127.0.0.1; yields its URL (``http://127.0.0.1:PORT/hub/api``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    finally:
        server.shutdown()
        server.server_close()


# --- single-user servers ---------------------------------------------------------------------


@dataclass
class Server:
    image: str
    tag: str
    container: str
    url: str  # http://127.0.0.1:PORT/user/tester/


def singleuser_env(hub_api: str, port: int) -> dict[str, str]:
    """The environment a spawner gives a single-user server (the token is a stand-in)."""
    prefix = f"/user/{USER}/"
    scopes = json.dumps([f"access:servers!server={USER}/", f"access:servers!user={USER}"])
    return {
        "JUPYTERHUB_API_TOKEN": "server-token-for-tests",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{USER}",
        "JUPYTERHUB_API_URL": hub_api,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_USER": USER,
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_SCOPES": scopes,
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": scopes,
        "JUPYTERHUB_HOST": "",
    }


def start_server(engine: Engine, image: str, tag: str, hub_api: str, timeout: float = 90) -> Server:
    """``jupyterhub-singleuser`` (the image's default command) on the host network, bound to
    127.0.0.1 on a free port; returns once ``/user/tester/api`` answers."""
    port = free_port()
    container = f"werkhub-test-{image}-{port}"
    env = [
        arg
        for key, value in singleuser_env(hub_api, port).items()
        for arg in ("-e", f"{key}={value}")
    ]
    engine.run(
        *("run", "-d", "--rm", "--name", container, "--network", "host"),
        *("--health-interval", "disable"),  # no systemd timer here; the tests run the check
        *env,
        tag,
    )
    server = Server(image, tag, container, f"http://127.0.0.1:{port}/user/{USER}/")
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = http_get(server.url + "api", timeout=2)
            if status == 200:
                return server
        except OSError:
            pass
        running = subprocess.run(
            engine.command("container", "inspect", container),
            env=engine.environ(),
            capture_output=True,
        )
        if running.returncode != 0 or time.monotonic() > deadline:
            logs = logs_of(engine, container)
            stop_server(engine, server)
            raise RuntimeError(f"{image}: single-user server did not answer:\n{logs[-4000:]}")
        time.sleep(0.25)


def logs_of(engine: Engine, container: str) -> str:
    done = subprocess.run(
        engine.command("logs", container), env=engine.environ(), capture_output=True, text=True
    )
    return done.stdout + done.stderr


def stop_server(engine: Engine, server: Server) -> None:
    subprocess.run(
        engine.command("rm", "--force", "--time", "5", server.container),
        env=engine.environ(),
        capture_output=True,
    )
