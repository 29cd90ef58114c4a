"""Spawn benchmark for the DockerSpawner on podman (host network, loopback only).

Starts podman's Docker API and a real `werkhub up` (kind: docker) on free loopback ports, then
1. spawn-to-ready of 10 sequential spawns through the hub's REST API (every other one with a
   running GPU booking, the rest CPU only): seconds from `POST .../server` until the hub
   reports the server ready; each server is stopped (and gone) before the next;
2. the baseline, interleaved in the same run: a bare `podman run` of the same image
   (jupyterhub-singleuser, host network, a fake hub API) timed until `/user/NAME/api`
   answers 200;
3. the booking check: the latency of `POST /api/spawn/prepare` on the werkhub service as the
   hub's spawner sees it (`BookingClient.call` timed inside the hub process by a
   sitecustomize shim placed on PYTHONPATH for this run only);
4. a burst of 10 simultaneous spawns (2 with bookings, 8 CPU only), and as its baseline the
   same burst of 10 bare `podman run`s (what the machine itself allows).
Prints medians, p90, the ratio of medians (goal <= 1.5), prepare p50/p99 (goal p99 < 50 ms)
and the burst's failures and slowest spawn (goal: none, slowest <= 3x a single spawn).

    python bench/spawn_docker.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from bench_support import Werkhub, free_port, write_config

from werkhub.images.engine import Engine, detect_engine, start_podman_service

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/werkhub/base:latest"
N = 10
API = "/services/werkhub/api"
POLICY = {
    "gpu_hours_per_week": None,
    "max_booking_hours": 744,
    "max_advance_days": 366,
    "max_concurrent_gpus": None,
}
# Wraps BookingClient.call in the hub process to log each prepare call's latency (ms).
SHIM = """
import os, time
_log = os.environ.get("WERKHUB_BENCH_PREPARE_LOG")
if _log:
    try:
        from werkhub.spawners import booking as _booking
    except Exception:
        _booking = None
    if _booking is not None:
        _call = _booking.BookingClient.call

        async def call(self, method, path, **kwargs):
            start = time.perf_counter()
            try:
                return await _call(self, method, path, **kwargs)
            finally:
                if path == "/api/spawn/prepare":
                    with open(_log, "a") as out:
                        out.write(f"{(time.perf_counter() - start) * 1000:.3f}\\n")

        _booking.BookingClient.call = call
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def wait_http(url: str, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


# --- a minimal fake hub API for the bare container -------------------------------------------


class FakeHub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/hub/api":
            self.reply(200, {"version": "6.1.1"})
        else:
            self.reply(404, {"status": 404, "message": "not faked"})

    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-JupyterHub-Version", "6.1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_hub():  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    finally:
        server.shutdown()
        server.server_close()


def bare_run(engine: Engine, hub_api: str, name: str) -> float:
    port = free_port()
    prefix = f"/user/{name}/"
    env = {
        "JUPYTERHUB_API_TOKEN": "bench-server-token",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{name}",
        "JUPYTERHUB_API_URL": hub_api,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_USER": name,
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_HOST": "",
    }
    container = f"bench-bare-{name}-{port}"
    args = ["run", "-d", "--rm", "--name", container, "--network", "host", "--user", "1000:100"]
    args += ["--health-interval", "disable"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args += [IMAGE, "jupyterhub-singleuser", "--ip=127.0.0.1", f"--port={port}"]
    start = time.perf_counter()
    try:
        engine.run(*args)
        ready = wait_http(f"http://127.0.0.1:{port}{prefix}api", 120)
    finally:
        subprocess.run(
            engine.command("rm", "--force", "--time", "5", container),
            env=engine.environ(),
            capture_output=True,
        )
    return ready - start


# --- werkhub ---------------------------------------------------------------------------------


def write_werkhub(tmp: Path, sock: Path, token: str) -> Werkhub:
    """The benchmark's werkhub (Docker spawner on the podman socket), with the probe that
    logs each spawn's booking check (``SHIM``) on its import path."""
    node = {
        "name": "n1",
        "devices": [
            {"index": 0, "uuid": "GPU-0000-a", "model": "H100", "memory_gb": 80},
            {"index": 1, "uuid": "GPU-1111-b", "model": "H100", "memory_gb": 80},
        ],
    }
    extra = {
        "services": {"mlflow": {"enabled": False}},
        "gpus": {"nodes": [node]},
        "booking": {"policies": {"default": POLICY}},
        "spawner": {
            "kind": "docker",
            "start_timeout": 180,
            "images": {"base": {"image": IMAGE, "mem_limit": "1G", "cpu_limit": 1}},
            "docker": {"url": f"unix://{sock}", "loopback_host_network": True},
        },
        "log_level": "WARNING",
    }
    config = tmp / "werkhub.yaml"
    hub = Werkhub(tmp / "state", config, write_config(config, extra), token)
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    hub.extra_env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])),
        "WERKHUB_BENCH_PREPARE_LOG": str(tmp / "prepare.log"),
    }
    return hub


def start_werkhub(hub: Werkhub) -> None:
    hub.launch()
    try:
        wait_http(f"{hub.url}{API}/health", 180)
    except TimeoutError:
        hub.stop(120)
        raise SystemExit(f"werkhub did not start:\n{hub.tail()}") from None


def make_user(api: httpx.Client, url: str, name: str, book: bool) -> str:
    api.post(f"/hub/api/users/{name}").raise_for_status()
    token = api.post(f"/hub/api/users/{name}/tokens", json={}).json()["token"]
    if book:
        body = {"gpu_type": "H100", "count": 1, "start": "now", "duration_minutes": 60}
        reply = httpx.post(
            f"{url}{API}/bookings",
            json=body,
            headers={"Authorization": f"token {token}"},
            trust_env=False,
            timeout=30,
        )
        reply.raise_for_status()
    return token


def spawn(url: str, name: str, token: str, gpu: str) -> float:
    headers = {"Authorization": f"token {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=240, trust_env=False) as api:
        start = time.perf_counter()
        reply = api.post(f"/hub/api/users/{name}/server", json={"image": "base", "gpu": gpu})
        if reply.status_code not in (201, 202):
            raise RuntimeError(f"{name}: spawn answered {reply.status_code} {reply.text[:300]}")
        while reply.status_code != 201:
            if time.perf_counter() - start > 240:
                raise TimeoutError(name)
            server = api.get(f"/hub/api/users/{name}").json()["servers"].get("")
            if server and server.get("ready"):
                break
            if not server:
                raise RuntimeError(f"{name}: the server is gone (spawn failed)")
            time.sleep(0.02)
        return time.perf_counter() - start


def stop(url: str, name: str, token: str) -> None:
    headers = {"Authorization": f"token {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120, trust_env=False) as api:
        api.delete(f"/hub/api/users/{name}/server")
        deadline = time.perf_counter() + 120
        while api.get(f"/hub/api/users/{name}").json()["servers"]:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{name}: server did not stop")
            time.sleep(0.1)


def prepare_times(tmp: Path) -> list[float]:
    log = tmp / "prepare.log"
    return [float(line) for line in log.read_text().split()] if log.exists() else []


def main() -> None:
    engine = detect_engine("podman")
    if not engine.image_exists(IMAGE):
        print(f"{IMAGE} is missing: build the images first (`make images`)")
        sys.exit(2)
    token = os.urandom(32).hex()
    users: list[str] = []
    (ROOT / ".cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache", prefix="bench-sd-") as tmpdir:
        tmp = Path(tmpdir)
        sock = tmp / "podman.sock"
        podman = start_podman_service(engine, sock, tmp / "podman.log")
        hub = None
        try:
            hub = write_werkhub(tmp, sock, token)
            start_werkhub(hub)
            url = hub.url
            admin = {"Authorization": f"token {token}"}
            with httpx.Client(base_url=url, headers=admin, timeout=60, trust_env=False) as api:
                gpu_users = {f"gpu{i}": make_user(api, url, f"gpu{i}", True) for i in range(2)}
                users += list(gpu_users)
                spawns: list[float] = []
                bares: list[float] = []
                with fake_hub() as hub_api:
                    bare_run(engine, hub_api, "warmup")  # page in the image once
                    for i in range(N):
                        bares.append(bare_run(engine, hub_api, f"bare{i}"))
                        if i % 2:
                            name, gpu = f"gpu{(i // 2) % 2}", "booking"
                            tok = gpu_users[name]
                        else:
                            name, gpu = f"cpu{i}", "cpu"
                            tok = make_user(api, url, name, False)
                            users.append(name)
                        spawns.append(spawn(url, name, tok, gpu))
                        stop(url, name, tok)
                    # the machine's own limit: the same burst of bare `podman run`s
                    gate = threading.Barrier(N)

                    def bare_one(i: int) -> float:
                        gate.wait()
                        return bare_run(engine, hub_api, f"bareburst{i}")

                    with ThreadPoolExecutor(N) as pool:
                        bare_burst = list(pool.map(bare_one, range(N)))
                seq_prepare = prepare_times(tmp)
                # burst: 10 at once
                burst_users = [(f"gpu{i}", gpu_users[f"gpu{i}"], "booking") for i in range(2)]
                for i in range(N - 2):
                    name = f"burst{i}"
                    burst_users.append((name, make_user(api, url, name, False), "cpu"))
                    users.append(name)
                barrier = threading.Barrier(len(burst_users))

                def one(item: tuple[str, str, str]) -> float | str:
                    barrier.wait()
                    try:
                        return spawn(url, *item)
                    except Exception as exc:  # counted as a failure
                        return f"{item[0]}: {exc}"

                with ThreadPoolExecutor(len(burst_users)) as pool:
                    burst = list(pool.map(one, burst_users))
                all_prepare = prepare_times(tmp)
                for name, tok, _ in burst_users:
                    try:
                        stop(url, name, tok)
                    except Exception as exc:
                        print(f"stop {name}: {exc}")
        finally:
            if hub is not None and hub.proc is not None:
                hub.stop(120)
            for name in users:
                subprocess.run(
                    engine.command("rm", "--force", "--time", "5", f"jupyter-{name}"),
                    env=engine.environ(),
                    capture_output=True,
                )
            podman.terminate()
            try:
                podman.wait(15)
            except subprocess.TimeoutExpired:
                podman.kill()
                podman.wait()

    med_s, med_b = statistics.median(spawns), statistics.median(bares)
    print(f"engine: {engine.name}, image {IMAGE}, host network, loopback")
    print(
        f"spawn-to-ready via hub + DockerSpawner ({N} sequential, 5 cpu / 5 booking): "
        f"median {med_s:.3f} s, p90 {percentile(spawns, 0.9):.3f} s"
    )
    print(
        f"  cpu spawns median {statistics.median(spawns[0::2]):.3f} s, "
        f"booking spawns median {statistics.median(spawns[1::2]):.3f} s"
    )
    print(
        f"bare `podman run` to /api 200 ({N}, same run, interleaved): "
        f"median {med_b:.3f} s, p90 {percentile(bares, 0.9):.3f} s"
    )
    print(f"ratio (median spawn / median bare): {med_s / med_b:.2f}  (goal <= 1.5)")
    for label, values in (("sequential spawns", seq_prepare), ("all incl. burst", all_prepare)):
        if values:
            print(
                f"booking check (POST /api/spawn/prepare as the hub's spawner sees it, "
                f"{label}, n={len(values)}): p50 {percentile(values, 0.5):.1f} ms, "
                f"p99 {percentile(values, 0.99):.1f} ms, max {max(values):.1f} ms  "
                "(goal p99 < 50 ms)"
            )
        else:
            print(f"booking check ({label}): no samples (shim not loaded)")
    if seq_prepare:
        order = ", ".join(f"{v:.1f}" for v in seq_prepare)
        print(f"  sequential booking checks in call order (ms): {order}")
    if len(all_prepare) > len(seq_prepare):
        order = ", ".join(f"{v:.1f}" for v in all_prepare[len(seq_prepare) :])
        print(f"  burst booking checks in completion order (ms): {order}")
    ok = [t for t in burst if isinstance(t, float)]
    failures = [t for t in burst if isinstance(t, str)]
    slowest = max(ok) if ok else float("nan")
    print(
        f"burst of {N} simultaneous spawns (2 booking, 8 cpu): {len(failures)} failures, "
        f"median {statistics.median(ok) if ok else float('nan'):.3f} s, "
        f"slowest {slowest:.3f} s = {slowest / med_s:.2f}x the sequential median "
        "(goal: 0 failures, <= 3x)"
    )
    for failure in failures:
        print(f"  failure: {failure}")
    bare_slowest = max(bare_burst)
    print(
        f"bare burst of {N} simultaneous `podman run` (same run): median "
        f"{statistics.median(bare_burst):.3f} s, slowest {bare_slowest:.3f} s = "
        f"{bare_slowest / med_b:.2f}x the bare median; werkhub burst slowest / bare burst "
        f"slowest: {slowest / bare_slowest:.2f}"
    )


if __name__ == "__main__":
    main()
