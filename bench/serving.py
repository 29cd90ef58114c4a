"""Model serving benchmark: what werkhub's endpoints add to MLflow's own scoring server.

Starts a real `werkhub up` on free loopback ports (endpoints checked every 0.5 s, aliases
looked up every 15 s as by default: ``--alias-poll``), creates a hub user, registers two
versions of a small scikit-learn model (a scaler and 60 boosted trees on four sensor
features, logged with ``mlflow.sklearn.log_model(serialization_format="cloudpickle",
signature, input_example)``), serves version 1 as an endpoint with the default resources
(1 CPU, 2G) and measures, for the same model in the same run:

1. latency and throughput at 1 and 16 clients (``--clients``), each a closed loop of
   ``POST .../invocations`` with one row (``--rows``), through werkhub
   (``PUBLIC/endpoints/<owner>/<name>/invocations``: proxy, gateway with its token check,
   scoring server) and straight to the scoring server's loopback port (found from the
   process list: the uvicorn ``--port`` of this hub's scoring server of that version);
   the two paths alternate in ``--rounds`` rounds, each after a warm-up; p50/p99 ms,
   req/s, failed requests, and the CPU per request of the benchmark's own clients, the
   werkhub service (gateway), the proxy, the hub and the scoring server (from /proc);
2. a rollout: ``--rollout-clients`` clients keep calling through werkhub while the
   endpoint's alias moves to version 2; failed requests (any answer but 200, or no
   answer), latency meanwhile, seconds from the alias move until version 2 serves;
3. cold start: the endpoint set to min_replicas 0 and idle_minutes 1 (the smallest), so
   each try first waits about 60-65 s for it to scale to zero; then one request is timed
   from sending to its answer; against a bare
   ``python -m mlflow models serve -m <the same version, downloaded> --env-manager local``
   timed from launch to its first answered ``/invocations`` (polled every 20 ms); the two
   alternate, ``--cold-starts`` times each; medians.

Goals (issue 15, this 2-core machine): p99 through werkhub <= 1.25x direct at 16 clients;
cold start <= 1.5x bare; 0 failed requests during the rollout. Client, proxy, hub,
service and scoring server share the machine's cores. The figures print as text with
PASS/MISS per goal, then one JSON line (also written to ``--json PATH``).

    python bench/serving.py [--seconds 10] [--clients 1,16] [--cold-starts 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from bench_support import free_port
from loadclient import percentile

from tests.support.hub import Werkhub, make_werkhub
from tests.support.serving import mlflow_env, set_alias, wait_state

OWNER = "bench-ann"
MODEL = f"{OWNER}~press-quality"
ENDPOINT = "press"
ALIAS = "champion"
API = "/services/werkhub/api"
SCORING_APP = "mlflow.pyfunc.scoring_server.app:app"
#: goals of issue 15
P99_GOAL = 1.25  # p99 through werkhub / direct, at the most clients
COLD_GOAL = 1.5  # cold start through werkhub / bare `mlflow models serve`
ROLLOUT_GOAL = 0  # failed requests during a rollout
#: the environment werkhub gives its scoring servers (serving/replicas.py), for the bare one
SCORING_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PYTHONUNBUFFERED": "1",
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
}


# ----------------------------------------------------------------------- the model


def sensor_frame(rows: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "temperature": rng.normal(75, 6, rows).round(2),
            "vibration": rng.gamma(2.0, 0.12, rows).round(3),
            "current": rng.normal(3.0, 0.3, rows).round(2),
            "pressure": rng.normal(180, 15, rows).round(1),
        }
    )


def register(hub: Werkhub, token: str, seed: int, alias: str | None) -> str:
    """Train and register one version of the press-quality classifier; its version.
    MLflow's chatter (run links, pickle warnings) is kept and shown only on failure."""
    import cloudpickle
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = sensor_frame(2000, seed)
    score = (frame["temperature"] - 75) / 6 + 4 * (frame["vibration"] - 0.24) - frame["current"] + 3
    labels = (score > 0.3).astype(int)
    model = make_pipeline(
        StandardScaler(),
        GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=seed),
    ).fit(frame, labels)
    example = frame.head(2)
    # pinned requirements: MLflow's inference of them imports the model in a subprocess
    requirements = [
        f"scikit-learn=={sklearn.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]
    chatter = io.StringIO()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
            mlflow_env(hub.url, token) as client,
        ):
            mlflow.set_experiment(f"{OWNER}/serving-bench")
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    serialization_format="cloudpickle",
                    signature=infer_signature(example, model.predict(example)),
                    input_example=example,
                    pip_requirements=requirements,
                    registered_model_name=MODEL,
                )
            version = str(info.registered_model_version)
            if alias is not None:
                client.set_registered_model_alias(MODEL, alias, version)
    except BaseException:
        print(chatter.getvalue(), file=sys.stderr)
        raise
    return version


def download(hub: Werkhub, token: str, version: str, folder: Path) -> Path:
    """The registered version as the bare baseline serves it (the folder with MLmodel)."""
    import mlflow.artifacts

    with (
        contextlib.redirect_stderr(io.StringIO()),  # its progress bar
        mlflow_env(hub.url, token),
    ):
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL}/{version}", dst_path=str(folder)
        )
    found = min(Path(path).rglob("MLmodel"), key=lambda p: len(p.parts))
    return found.parent


def request_body(rows: int) -> bytes:
    frame = sensor_frame(rows, seed=7)
    return json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()


# ----------------------------------------------------------------------- processes


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads), from /proc; 0 once it is gone."""
    text = _read(Path(f"/proc/{pid}/stat"))
    if not text:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (this hub's own: other hubs may run beside)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            text = _read(entry / "stat")
            if text:
                children.setdefault(int(text.rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry.name)
                )
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def scoring_processes(hub: Werkhub, version: str) -> tuple[int, list[int]]:
    """The loopback port of this hub's scoring server of ``version`` and its processes
    (the sandbox's wrapper and the server): found by the model folder werkhub gives it
    (``<state>/endpoints/servers/<id>/v<version>-<ns>/``) and uvicorn's ``--port``."""
    assert hub.proc is not None
    marker = f"{hub.state.resolve()}/endpoints/servers/"
    port, pids = 0, []
    for pid in descendants(hub.proc.pid):
        cmdline = _read(Path(f"/proc/{pid}/cmdline"))
        if SCORING_APP not in cmdline:
            continue
        text = cmdline + " " + _read(Path(f"/proc/{pid}/environ"))
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if not any(marker in t and f"/v{version}-" in t for t in (text, cwd)):
            continue
        words = cmdline.split()
        port = int(words[len(words) - 1 - words[::-1].index("--port") + 1])
        pids.append(pid)
    if not pids:
        raise RuntimeError(f"no scoring server of version {version} below werkhub's processes")
    return port, pids


@dataclass
class CpuMeter:
    """CPU seconds of each part between ``start`` and ``stop``."""

    parts: dict[str, list[int]]
    before: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, hub: Werkhub, model_pids: list[int]) -> CpuMeter:
        assert hub.proc is not None
        parts: dict[str, list[int]] = {"client": [os.getpid()], "model": model_pids}
        markers = (
            ("service", "werkhub.service.app"),
            ("proxy", "configurable-http-proxy"),
            ("hub", "jupyterhub"),
        )
        for pid in descendants(hub.proc.pid):
            cmdline = _read(Path(f"/proc/{pid}/cmdline"))
            for name, marker in markers:
                if marker in cmdline and SCORING_APP not in cmdline:
                    parts.setdefault(name, []).append(pid)
                    break
        return cls(parts)

    def _now(self) -> dict[str, float]:
        return {name: sum(_cpu_seconds(p) for p in pids) for name, pids in self.parts.items()}

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> None:
        now = self._now()
        self.spent = {name: now[name] - self.before[name] for name in now}

    def per_request(self, requests: int) -> dict[str, float]:
        return {n: round(1000 * v / max(1, requests), 3) for n, v in self.spent.items()}


# ----------------------------------------------------------------------- load


@dataclass
class Stats:
    """Latencies (ms) of answered requests (200) and what failed, over ``wall`` seconds."""

    latencies: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.failed.values())

    def merge(self, other: Stats) -> None:
        self.latencies += other.latencies
        self.failed.update(other.failed)
        self.wall += other.wall
        for name, value in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + value

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": sum(self.failed.values()),
            "failures": dict(self.failed),
            "req_per_s": round(self.requests / self.wall, 1) if self.wall else math.nan,
            "p50_ms": round(percentile(self.latencies, 0.5), 2),
            "p99_ms": round(percentile(self.latencies, 0.99), 2),
            "max_ms": round(max(self.latencies, default=math.nan), 2),
            "cpu_ms_per_request": {
                n: round(1000 * v / max(1, self.requests), 3) for n, v in self.cpu.items()
            },
        }


class Caller:
    """One client: its own connection, a closed loop (the next request once answered)."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        self.url, self.body = url, body
        self.headers = {**headers, "Content-Type": "application/json"}
        self.client = httpx.AsyncClient(
            timeout=120, limits=httpx.Limits(max_connections=1), trust_env=False
        )

    async def once(self, stats: Stats | None) -> None:
        started = time.perf_counter()
        try:
            reply = await self.client.post(self.url, content=self.body, headers=self.headers)
        except httpx.HTTPError as exc:
            if stats is not None:
                stats.failed[type(exc).__name__] += 1
            return
        if stats is None:
            return
        if reply.status_code == 200:
            stats.latencies.append((time.perf_counter() - started) * 1000)
        else:
            stats.failed[f"HTTP {reply.status_code}"] += 1

    async def until(self, stats: Stats, stop: asyncio.Event | float) -> None:
        while not (
            stop.is_set() if isinstance(stop, asyncio.Event) else time.perf_counter() >= stop
        ):
            await self.once(stats)

    async def aclose(self) -> None:
        await self.client.aclose()


async def measure(
    url: str, headers: dict[str, str], body: bytes, clients: int, seconds: float, meter: CpuMeter
) -> Stats:
    """``clients`` closed loops for ``seconds`` after a warm-up of three requests each."""
    callers = [Caller(url, headers, body) for _ in range(clients)]
    stats = Stats()
    try:
        for _ in range(3):
            await asyncio.gather(*(c.once(None) for c in callers))
        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(c.until(stats, started + seconds) for c in callers))
        stats.wall = time.perf_counter() - started
        meter.stop()
        stats.cpu = dict(meter.spent)
    finally:
        await asyncio.gather(*(c.aclose() for c in callers))
    return stats


# ----------------------------------------------------------------------- phases


@dataclass
class Target:
    """Where the two paths reach the same scoring server."""

    werkhub: str
    direct: str
    headers: dict[str, str]
    body: bytes


def latency(hub: Werkhub, target: Target, model_pids: list[int], args: argparse.Namespace) -> dict:
    """Phase 1: both paths at each number of clients, alternating in rounds."""
    meter = CpuMeter.of(hub, model_pids)
    results: dict[str, dict[int, Stats]] = {"werkhub": {}, "direct": {}}
    share = args.seconds / args.rounds
    for round_no in range(args.rounds):
        for clients in args.clients:
            paths = ["werkhub", "direct"] if round_no % 2 == 0 else ["direct", "werkhub"]
            for path in paths:
                url = target.werkhub if path == "werkhub" else target.direct
                headers = target.headers if path == "werkhub" else {}
                stats = asyncio.run(measure(url, headers, target.body, clients, share, meter))
                results[path].setdefault(clients, Stats()).merge(stats)
    print(
        f"\n== latency and throughput ({args.rows} row(s) per request, {args.seconds:g} s per "
        f"path and level in {args.rounds} rounds)"
    )
    print(
        f"{'clients':>7} {'path':8} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'failed':>6}  CPU ms per request"
    )
    figures: dict[str, Any] = {}
    for clients in args.clients:
        level = figures[str(clients)] = {}
        for path in ("direct", "werkhub"):
            f = level[path] = results[path][clients].figures()
            cpu = " ".join(f"{n} {v:.2f}" for n, v in f["cpu_ms_per_request"].items())
            print(
                f"{clients:7d} {path:8} {f['requests']:8d} {f['req_per_s']:7.1f} "
                f"{f['p50_ms']:7.2f} {f['p99_ms']:7.2f} {f['failed']:6d}  {cpu}"
            )
        w, d = level["werkhub"], level["direct"]
        level["ratio"] = {
            "p50": round(w["p50_ms"] / d["p50_ms"], 3),
            "p99": round(w["p99_ms"] / d["p99_ms"], 3),
            "req_per_s": round(w["req_per_s"] / d["req_per_s"], 3),
        }
        r = level["ratio"]
        print(
            f"{'':7} werkhub/direct: p50 {r['p50']:.2f}x  p99 {r['p99']:.2f}x  "
            f"req/s {r['req_per_s']:.2f}x"
        )
    return figures


async def _rollout(
    hub: Werkhub, token: str, target: Target, new: str, old_pids: list[int], clients: int
) -> dict:
    stats, stop = Stats(), asyncio.Event()
    callers = [Caller(target.werkhub, target.headers, target.body) for _ in range(clients)]
    api = httpx.AsyncClient(
        base_url=hub.url, headers={"Authorization": f"token {token}"}, timeout=30, trust_env=False
    )
    try:
        load = [asyncio.create_task(c.until(stats, stop)) for c in callers]
        started = time.perf_counter()
        await asyncio.sleep(2)  # steady load first
        before = len(stats.latencies)
        await asyncio.to_thread(set_alias, hub.url, token, MODEL, ALIAS, new)
        moved = time.perf_counter()
        switched = math.nan
        while time.perf_counter() - moved < 300:
            found = (await api.get(f"{API}/endpoints/{ENDPOINT}")).json()
            if found.get("serving_version") == new:
                switched = time.perf_counter() - moved
                break
            await asyncio.sleep(0.1)
        # the old server drains and stops while requests go on
        gone = math.nan
        while time.perf_counter() - moved < 300:
            if not any(Path(f"/proc/{pid}").exists() for pid in old_pids):
                gone = time.perf_counter() - moved
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*load)
        stats.wall = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.gather(*(c.aclose() for c in callers), api.aclose())
    figures = stats.figures()
    del figures["cpu_ms_per_request"]  # not measured here
    figures.update(
        clients=clients,
        switch_s=round(switched, 2),
        old_stopped_s=round(gone, 2),
        requests_before_move=before,
    )
    return figures


def rollout(
    hub: Werkhub,
    token: str,
    target: Target,
    new: str,
    old_pids: list[int],
    args: argparse.Namespace,
) -> dict:
    """Phase 2: the alias moves to ``new`` under load through werkhub."""
    clients, poll = args.rollout_clients, args.alias_poll
    f = asyncio.run(_rollout(hub, token, target, new, old_pids, clients))
    print(f"\n== rollout to version {new} under {clients} clients (alias '{ALIAS}' moved)")
    print(
        f"requests {f['requests']}, failed {f['failed']} {f['failures'] or ''}; "
        f"p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms, max {f['max_ms']:.1f} ms; "
        f"version {new} served {f['switch_s']:.2f} s after the alias moved "
        f"(alias polled every {poll:g} s), the old server stopped after {f['old_stopped_s']:.2f} s"
    )
    return f


def werkhub_cold(hub: Werkhub, api: httpx.Client, target: Target) -> float:
    """Seconds from sending a request to a scaled-to-zero endpoint to its answer."""
    print("  waiting for the endpoint to scale to zero (idle_minutes 1: about 60-65 s)")
    wait_state(api, ENDPOINT, ("scaled_to_zero",), timeout=240)
    headers = {**target.headers, "Content-Type": "application/json"}
    started = time.perf_counter()
    reply = httpx.post(
        target.werkhub, content=target.body, headers=headers, timeout=300, trust_env=False
    )
    took = time.perf_counter() - started
    if reply.status_code != 200:
        raise RuntimeError(f"cold start answered {reply.status_code}: {reply.text[:300]}")
    return took


def bare_cold(model_dir: Path, body: bytes, workdir: Path) -> float:
    """Seconds from launching `mlflow models serve` to its first answered /invocations."""
    port = free_port()
    # the CLI runs `uvicorn` from PATH: this environment's
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **SCORING_ENV, "HOME": str(workdir), "PATH": path}
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
    argv += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    log = (workdir / f"bare-{port}.log").open("wb")
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/invocations"
    headers = {"Content-Type": "application/json"}
    try:
        with httpx.Client(timeout=30, trust_env=False) as client:
            while time.perf_counter() - started < 300:
                if proc.poll() is not None:
                    tail = (workdir / f"bare-{port}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"mlflow models serve exited ({proc.returncode}):\n{tail}")
                try:
                    if client.post(url, content=body, headers=headers).status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise RuntimeError("mlflow models serve did not answer within 300 s")
    finally:
        log.close()
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    continue
        # the uvicorn child, had it outlived the CLI
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def cold_starts(
    hub: Werkhub, api: httpx.Client, target: Target, model_dir: Path, tries: int, tmp: Path
) -> dict:
    """Phase 3: werkhub from zero against a bare start, alternating."""
    reply = api.patch(f"{API}/endpoints/{ENDPOINT}", json={"min_replicas": 0, "idle_minutes": 1})
    reply.raise_for_status()
    print(f"\n== cold start ({tries} tries each, alternating)")
    werkhub, bare = [], []
    for k in range(tries):
        werkhub.append(werkhub_cold(hub, api, target))
        bare.append(bare_cold(model_dir, target.body, tmp))
        print(f"  try {k + 1}: werkhub {werkhub[-1]:.2f} s, bare {bare[-1]:.2f} s")
    w, b = statistics.median(werkhub), statistics.median(bare)
    print(f"median: werkhub {w:.2f} s, bare mlflow models serve {b:.2f} s: {w / b:.2f}x")
    return {
        "werkhub_s": [round(x, 3) for x in werkhub],
        "bare_s": [round(x, 3) for x in bare],
        "werkhub_median_s": round(w, 3),
        "bare_median_s": round(b, 3),
        "ratio": round(w / b, 3),
    }


# ----------------------------------------------------------------------- main


def goal_lines(result: dict[str, Any], top: int) -> dict[str, dict[str, Any]]:
    goals: dict[str, dict[str, Any]] = {}
    p99 = result["latency"][str(top)]["ratio"]["p99"]
    goals["p99_ratio"] = {"value": p99, "goal": P99_GOAL, "pass": p99 <= P99_GOAL}
    if result.get("cold"):
        cold = result["cold"]["ratio"]
        goals["cold_ratio"] = {"value": cold, "goal": COLD_GOAL, "pass": cold <= COLD_GOAL}
    failed = result["rollout"]["failed"]
    goals["rollout_failed"] = {"value": failed, "goal": ROLLOUT_GOAL, "pass": failed == 0}
    labels = {
        "p99_ratio": f"p99 werkhub / direct at {top} clients",
        "cold_ratio": "cold start werkhub / bare (medians)",
        "rollout_failed": "failed requests during the rollout",
    }
    print("\n== goals")
    for key, g in goals.items():
        value = f"{g['value']:.2f}x" if key != "rollout_failed" else str(g["value"])
        bound = f"<= {g['goal']:g}x" if key != "rollout_failed" else f"= {g['goal']}"
        print(f"{labels[key]:40s} {value:>8}  (goal {bound}): {'PASS' if g['pass'] else 'MISS'}")
    if "cold_ratio" not in goals:
        print(f"{labels['cold_ratio']:40s} {'skipped':>8}  (--skip-cold)")
    return goals


def run(hub: Werkhub, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    token = hub.create_user(OWNER)
    started = time.perf_counter()
    v1 = register(hub, token, seed=1, alias=ALIAS)
    v2 = register(hub, token, seed=2, alias=None)
    print(f"registered versions {v1} and {v2} of {MODEL} in {time.perf_counter() - started:.1f} s")
    with hub.client(token) as api:
        started = time.perf_counter()
        reply = api.post(
            f"{API}/endpoints", json={"name": ENDPOINT, "model": MODEL, "alias": ALIAS}
        )
        if reply.status_code != 201:
            raise RuntimeError(f"deploying answered {reply.status_code}: {reply.text}")
        wait_state(api, ENDPOINT, ("ready",), timeout=300)
        print(f"endpoint ready {time.perf_counter() - started:.1f} s after the request")
        port, pids = scoring_processes(hub, v1)
        target = Target(
            werkhub=f"{hub.url}/endpoints/{OWNER}/{ENDPOINT}/invocations",
            direct=f"http://127.0.0.1:{port}/invocations",
            headers={"Authorization": f"Bearer {token}"},
            body=request_body(args.rows),
        )
        answers = [
            httpx.post(
                url, content=target.body, headers={**h, "Content-Type": "application/json"}
            ).json()
            for url, h in ((target.werkhub, target.headers), (target.direct, {}))
        ]
        if answers[0] != answers[1]:
            raise RuntimeError(f"the two paths answer differently: {answers}")
        result: dict[str, Any] = {"latency": latency(hub, target, pids, args)}
        result["rollout"] = rollout(hub, token, target, v2, pids, args)
        if not args.skip_cold:
            model_dir = download(hub, token, v2, tmp / "bare-model")
            result["cold"] = cold_starts(hub, api, target, model_dir, args.cold_starts, tmp)
    return result


def finite(value: Any) -> Any:
    """``value`` with NaN (nothing measured) as null: strict JSON for machines."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def levels(text: str) -> list[int]:
    found = sorted({int(x) for x in text.split(",") if x.strip()})
    if not found or found[0] < 1:
        raise argparse.ArgumentTypeError("numbers of clients, e.g. 1,16")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--seconds", type=float, default=10.0, help="timed load per path and level (10)")
    add("--clients", type=levels, default=[1, 16], help="concurrent clients, e.g. 1,16 (1,16)")
    add("--rounds", type=int, default=4, help="rounds the paths alternate in (4)")
    add("--rows", type=int, default=1, help="rows per request (1)")
    add("--rollout-clients", type=int, default=4, help="clients during the rollout (4)")
    add(
        "--alias-poll",
        type=float,
        default=15.0,
        help="serving.alias_poll_seconds: how often werkhub looks where the alias points "
        "(15, werkhub's default; each look costs the service some CPU)",
    )
    add("--cold-starts", type=int, default=3, help="cold starts of each kind (3; ~65 s each)")
    add("--skip-cold", action="store_true", help="no cold starts (they wait for idleness)")
    add("--json", type=Path, metavar="PATH", help="also write the JSON results to PATH")
    args = parser.parse_args()
    if args.rounds < 1 or args.rows < 1 or args.rollout_clients < 1 or args.cold_starts < 1:
        parser.error("--rounds, --rows, --rollout-clients and --cold-starts must be at least 1")
    load_start = [round(x, 2) for x in os.getloadavg()]
    load = " ".join(f"{x:.2f}" for x in load_start)
    print(
        f"serving benchmark; {os.cpu_count()} CPUs shared by clients, proxy, hub, service and "
        f"scoring server; load average {load}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="werkhub-bench-serving-"))
    hub = make_werkhub(
        tmp,
        {
            "log_level": "WARNING",
            "serving": {"check_seconds": 0.5, "alias_poll_seconds": args.alias_poll},
        },
    )
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        hub.start()
        print(f"werkhub up in {time.perf_counter() - started:.1f} s")
        result = run(hub, args, tmp)
    except BaseException:
        if hub.proc is not None:
            print("werkhub's last output:\n" + hub.tail(40), file=sys.stderr)
        raise
    finally:
        if hub.proc is not None:
            hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["goals"] = goal_lines(result, args.clients[-1])
    result.update(
        bench="serving",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        cpus=os.cpu_count(),
        load_average_start=load_start,
        load_average=[round(x, 2) for x in os.getloadavg()],
        total_s=round(time.perf_counter() - started, 1),
        settings={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    )
    print(f"total {result['total_s']:.0f} s; load average {result['load_average']}")
    line = json.dumps(finite(result), sort_keys=True)
    if args.json is not None:
        args.json.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
