"""Start and stop a real ``werkhub up`` subprocess: the hub-level test tiers and the
benchmarks in bench/ use this one harness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.net import free_ports, port_open
from tests.support.processes import processes_in
from tests.support.wait import wait_for

__all__ = [
    "ROOT",
    "Werkhub",
    "free_ports",
    "make_werkhub",
    "port_open",
    "processes_in",
    "running_werkhub",
]

ROOT = Path(__file__).resolve().parents[2]
WERKHUB = [sys.executable, "-m", "werkhub.cli.main"]
#: what the launcher prints once the hub and its services answer (werkhub.app.launcher)
UP_LINE = "werkhub is up at "


def write_config(path: Path, extra: dict[str, Any] | None = None) -> dict[str, int]:
    public, hub, proxy, service, mlflow = free_ports(5)
    data: dict[str, Any] = {
        "hub": {
            "public_url": f"http://127.0.0.1:{public}",
            "hub_port": hub,
            "proxy_api_port": proxy,
        },
        "services": {"werkhub": {"port": service}, "mlflow": {"port": mlflow}},
        "spawner": {"start_timeout": 60},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:  # a top-level setting such as log_level
            data[key] = value
    path.write_text(yaml.safe_dump(data))
    return {"public": public, "hub": hub, "proxy": proxy, "service": service, "mlflow": mlflow}


class Werkhub:
    """One ``werkhub up`` process on its own ports and state folder."""

    def __init__(self, state: Path, config: Path, ports: dict[str, int], admin_token: str) -> None:
        self.state = state
        self.config = config
        self.ports = ports
        self.admin_token = admin_token
        self.url = f"http://127.0.0.1:{ports['public']}"
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        #: where the latest launch's output starts in ``output``
        self.launched_at = 0
        self.first_password: str | None = None
        #: further environment of ``werkhub up`` (benchmarks' probes)
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["WERKHUB_ADMIN_TOKEN"] = self.admin_token
        env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [*WERKHUB, *args]
        if args and args[0] in ("up", "users"):
            cmd += ["--state", str(self.state), "--config", str(self.config)]
        return subprocess.run(
            cmd,
            env=self.env(),
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
            cwd=self.state.parent,
        )

    def start(self, timeout: float = 180) -> None:
        """Launch ``werkhub up`` and wait until it says it is up. A launcher that ended
        before that is an error with its output (it used to pass for up, and every test
        of the module then failed on a refused connection); it is launched once more
        first, with the first attempt's output kept for the error."""
        ready = self.launch()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"werkhub did not come up in {timeout:g} s:\n" + self.summary())
        if self.up:
            return
        first = self.summary()
        code = self.proc.wait() if self.proc else None
        print(f"werkhub up ended (exit {code}) before it was up; launching it again:\n{first}")
        ready = self.launch()
        if not ready.wait(timeout) or not self.up:
            self.stop()
            raise RuntimeError(
                f"werkhub up ended before it was up, twice. First:\n{first}\nThen:\n"
                + self.summary()
            )

    @property
    def up(self) -> bool:
        """The latest launch said it is up and is still running."""
        said = any(UP_LINE in line for line in self.output[self.launched_at :])
        return said and self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        return "".join(self.output[-lines:])

    def summary(self, head: int = 80, tail: int = 40) -> str:
        """The start of the latest launch's output (where a stuck start shows what it
        reached) and its end (a service repeating the same traceback fills any tail)."""
        output = self.output[self.launched_at :]
        if len(output) <= head + tail:
            return "".join(output)
        skipped = len(output) - head - tail
        return "".join([*output[:head], f"[... {skipped} lines ...]\n", *output[-tail:]])

    def launch(self) -> threading.Event:
        """Launch ``werkhub up`` without waiting; the event is set once it says it is up (or
        has ended). Its output collects in ``output``."""
        self.launched_at = len(self.output)
        self.proc = subprocess.Popen(
            [*WERKHUB, "up", "--state", str(self.state), "--config", str(self.config)],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.state.parent,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(ready,), daemon=True).start()
        return ready

    def _pump(self, ready: threading.Event) -> None:
        assert self.proc and self.proc.stdout
        expect_password = False
        for line in self.proc.stdout:
            self.output.append(line)
            if expect_password and line.strip():
                self.first_password = line.strip()
                expect_password = False
            if "First run: created the administrator" in line:
                expect_password = True
            if UP_LINE in line:
                ready.set()
        ready.set()

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            from werkhub.app.reap import reap

            reap(self.state)  # what the killed launcher could not end
            raise

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def create_user(self, name: str) -> str:
        """Create a user through the REST API with the admin token; return a token of theirs."""
        with self.admin() as api:
            reply = api.post(f"/hub/api/users/{name}")
            assert reply.status_code in (201, 409), reply.text
            reply = api.post(f"/hub/api/users/{name}/tokens", json={"note": "test"})
            assert reply.status_code == 201, reply.text
            return reply.json()["token"]

    def add_to_group(self, group: str, members: list[str]) -> None:
        """Create hub group ``group`` if missing and add ``members`` to it (admin token)."""
        with self.admin() as api:
            reply = api.post(f"/hub/api/groups/{group}")
            assert reply.status_code in (201, 409), reply.text
            reply = api.post(f"/hub/api/groups/{group}/users", json={"users": members})
            assert reply.status_code == 200, reply.text

    def spawn(self, name: str, token: str, timeout: float = 90) -> None:
        with self.client(token) as api:
            reply = api.post(f"/hub/api/users/{name}/server")
            assert reply.status_code in (201, 202, 400), reply.text
            wait_for(
                lambda: (api.get(f"/hub/api/users/{name}").json()["servers"].get("") or {}).get(
                    "ready"
                ),
                timeout=timeout,
                interval=0.25,
                what=f"the server of {name} to be ready",
            )

    def stop_server(self, name: str, token: str, timeout: float = 120) -> None:
        """Stop ``name``'s server and wait until the hub lists none."""
        with self.client(token) as api:
            api.delete(f"/hub/api/users/{name}/server", timeout=timeout)
            wait_for(
                lambda: not api.get(f"/hub/api/users/{name}").json()["servers"],
                timeout=timeout,
                interval=0.2,
                what=f"the server of {name} to stop",
            )


#: the werkhub service's API below the hub's URL
SERVICE_API = "/services/werkhub/api"
#: the states a job run ends in
RUN_ENDED = frozenset({"succeeded", "failed", "timed_out", "interrupted", "cancelled"})


def wait_run(
    api: httpx.Client,
    run_id: int,
    statuses: frozenset[str] | set[str] = RUN_ENDED,
    timeout: float = 120,
) -> dict[str, Any]:
    """The job run ``run_id`` once its status is one of ``statuses``."""

    def reached() -> dict[str, Any] | None:
        reply = api.get(f"{SERVICE_API}/runs/{run_id}")
        run = reply.json() if reply.status_code == 200 else {}
        return run if run.get("status") in statuses else None

    return wait_for(
        reached, timeout=timeout, interval=0.5, what=f"run {run_id} in {sorted(statuses)}"
    )


@contextmanager
def running_werkhub(tmp: Path, extra: dict[str, Any] | None = None) -> Iterator[Werkhub]:
    """A werkhub of its own (``extra`` merged into werkhub.yaml), up for the block."""
    hub = make_werkhub(tmp, extra)
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def make_werkhub(tmp: Path, extra: dict[str, Any] | None = None) -> Werkhub:
    state = tmp / "state"
    config = tmp / "werkhub.yaml"
    ports = write_config(config, extra)
    return Werkhub(state, config, ports, admin_token="t" * 8 + os.urandom(20).hex())


def server_env(hub: Werkhub, name: str) -> dict[str, str]:
    """Environment of ``name``'s local user server (found by its home folder)."""
    home = str((hub.state / "homes" / name).resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != home:
                continue
            raw = (entry / "environ").read_bytes().decode()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if env.get("JUPYTERHUB_USER") == name:
            return env
    raise AssertionError(f"no server process of {name}")
