"""Spawn benchmark for the embedded default.

Starts a real `werkhub up` on free loopback ports, then
1. cold start: seconds from launching `werkhub up` to the hub answering through the proxy,
   and to "werkhub is up" (hub plus werkhub service routed);
2. spawn-to-ready latency of N sequential users through the hub's REST API;
3. the baseline, measured in the same run: a bare `jupyterhub-singleuser` of the same
   environment started directly (no hub spawn), timed to its first answer.
Prints median, p90 and the ratio of medians (goal: <= 1.3).
4. the sandbox's cost, measured in the same run: spawn-to-ready of the default (each
   server in its bubblewrap sandbox) against a second werkhub with `spawner.sandbox: off`,
   spawns interleaved; ratio of medians (goal: <= 1.1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_support import Werkhub, free_port, write_config

ROOT = Path(__file__).resolve().parents[1]


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def write_werkhub(tmp: Path, token: str, sandbox: str = "auto") -> Werkhub:
    config = tmp / f"werkhub-{sandbox}.yaml"
    extra = {"log_level": "WARNING", "spawner": {"sandbox": {"mode": sandbox}}}
    ports = write_config(config, extra)
    return Werkhub(tmp / f"state-{sandbox}", config, ports, token)


def start_werkhub(hub: Werkhub) -> tuple[float, float]:
    """Launch `werkhub up`; seconds until the hub answers and until everything is routed."""
    start = time.perf_counter()
    hub.launch()
    try:
        hub_ready = wait_http(f"{hub.url}/hub/api", 120) - start
        all_ready = wait_http(f"{hub.url}/services/werkhub/api/health", 120) - start
    except TimeoutError:
        hub.stop()
        raise SystemExit("werkhub did not start:\n" + hub.tail()) from None
    return hub_ready, all_ready


def spawn_once(api: httpx.Client, name: str) -> float:
    api.post(f"/hub/api/users/{name}").raise_for_status()
    start = time.perf_counter()
    reply = api.post(f"/hub/api/users/{name}/server")
    reply.raise_for_status()
    while reply.status_code != 201:
        server = api.get(f"/hub/api/users/{name}").json()["servers"].get("")
        if server and server.get("ready"):
            break
        time.sleep(0.02)
        reply = httpx.Response(202)
    return time.perf_counter() - start


def bare_singleuser(api: httpx.Client, hub_port: int, name: str, home: Path) -> float:
    """Start jupyterhub-singleuser directly with the environment a spawn would give it."""
    api.post(f"/hub/api/users/{name}").raise_for_status()
    token = api.post(f"/hub/api/users/{name}/tokens", json={}).json()["token"]
    port = free_port()
    prefix = f"/user/{name}/"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "USER": name,
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{name}",
        "JUPYTERHUB_USER": name,
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_HOST": "",
    }
    home.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "jupyterhub.singleuser"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ready = wait_http(f"http://127.0.0.1:{port}{prefix}api", 90)
    finally:
        proc.terminate()
        proc.wait(30)
    return ready - start


def unsandboxed_blocked() -> list[str]:
    """Folders that keep the unsandboxed baseline from running here: run as root, werkhub
    starts unsandboxed user code under the person's own uid (never root), which must
    pass through the interpreter's folders (a Python under /root cannot be reached)."""
    if os.geteuid() != 0:
        return []
    from werkhub.sandbox.host import closed_folders

    return closed_folders([os.path.realpath(sys.executable)], uid=65534)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10)
    args = parser.parse_args()
    token = os.urandom(32).hex()
    (ROOT / ".cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache", prefix="bench-spawn-") as tmpdir:
        tmp = Path(tmpdir)
        blocked = unsandboxed_blocked()
        boxed, plain = write_werkhub(tmp, token), write_werkhub(tmp, token, "off")
        url, hub_port = boxed.url, boxed.ports["hub"]
        cold_hub, cold_all = start_werkhub(boxed)
        try:
            if not blocked:
                start_werkhub(plain)
            headers = {"Authorization": f"token {token}"}
            with (
                httpx.Client(base_url=url, headers=headers, timeout=120) as api,
                httpx.Client(base_url=plain.url, headers=headers, timeout=120) as off,
            ):
                spawns, bares, unboxed = [], [], []
                for i in range(args.users):
                    # interleave so all three see the same machine load
                    bares.append(bare_singleuser(api, hub_port, f"bare{i}", tmp / f"bare{i}"))
                    spawns.append(spawn_once(api, f"user{i}"))
                    api.delete(f"/hub/api/users/user{i}/server")
                    if not blocked:
                        unboxed.append(spawn_once(off, f"user{i}"))
                        off.delete(f"/hub/api/users/user{i}/server")
        finally:
            boxed.stop(90)
            if plain.proc is not None:
                plain.stop(90)
        warm_hub, warm_all = start_werkhub(boxed)  # the same state folder: a restart
        boxed.stop(90)
    med_s, med_b = statistics.median(spawns), statistics.median(bares)
    print(
        f"werkhub up cold start (new state folder): hub answering {cold_hub:.2f} s, "
        f"hub + services routed {cold_all:.2f} s"
    )
    print(
        f"werkhub up restart (existing state):     hub answering {warm_hub:.2f} s, "
        f"hub + services routed {warm_all:.2f} s"
    )
    print(
        f"spawn-to-ready via hub ({args.users} sequential users): "
        f"median {med_s:.3f} s, p90 {percentile(spawns, 0.9):.3f} s"
    )
    print(
        f"bare jupyterhub-singleuser start (same env, same run): "
        f"median {med_b:.3f} s, p90 {percentile(bares, 0.9):.3f} s"
    )
    print(f"ratio (median spawn / median bare): {med_s / med_b:.2f}  (goal <= 1.3)")
    if blocked:
        print(
            "spawn-to-ready without sandbox: not measured here: run as root, unsandboxed "
            f"user code runs under its own uid, which cannot pass through {blocked} "
            "(where this Python lives); run the benchmark as an ordinary user, or with a "
            "Python others may reach, to measure the sandbox's cost"
        )
        return
    med_u = statistics.median(unboxed)
    how = "own uid, no bubblewrap" if os.geteuid() == 0 else "werkhub's own user"
    print(
        f"spawn-to-ready without sandbox (spawner.sandbox: off: {how}; same run): "
        f"median {med_u:.3f} s, p90 {percentile(unboxed, 0.9):.3f} s"
    )
    print(f"ratio (median sandboxed / median unsandboxed): {med_s / med_u:.2f}  (goal <= 1.1)")


if __name__ == "__main__":
    main()
