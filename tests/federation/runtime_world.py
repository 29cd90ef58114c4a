"""A federation runtime on a throwaway state folder for the runtime tests: real SuperLink
and SuperNodes in real bubblewrap sandboxes (throwaway hub-user names mapped to sandbox
uids as the sandbox tests do), no hub; every process it started stopped afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkhub.federation.commands import CONNECTION
from werkhub.federation.flower import flwr
from werkhub.federation.runtime import FederationRuntime, LinkPlan, PartyPlan
from werkhub.sandbox.host import bwrap_path
from werkhub.sandbox.prepare import UID_REGISTRY_VAR, uid_of

ROOT = Path(__file__).resolve().parents[2]
FLOWER_BIN = ROOT / ".venv-flower" / "bin"
TINY_APP = Path(__file__).resolve().parent / "apps" / "tiny"
#: uids of the runtime tests' people (apart from the sandbox tests' 231000...)
UID_BASE = 236_000
OWNER = "fr-owner"
PARTIES = {"acme": "fr-ann", "beta": "fr-bob", "gamma": "fr-gil", "delta": "fr-dan"}
THREE = ("acme", "beta", "gamma")


def can_run() -> str:
    """Why the runtime tests cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "sandboxes of other uids need root"
    if bwrap_path() is None:
        return "no bubblewrap"
    if not (FLOWER_BIN / "flower-superlink").exists():
        return "no .venv-flower (make bootstrap)"
    return ""


def points(seed: int, rows: int = 60) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        x = [rng.uniform(-1, 1) for _ in range(4)]
        y = 2 * x[0] - x[1] + 0.5 * x[2] + 0.1 + rng.gauss(0, 0.05)
        lines.append(",".join(f"{v:.6f}" for v in [*x, y]))
    return "\n".join(lines) + "\n"


@dataclass
class RuntimeWorld:
    base: Path
    state: Path
    settings: dict[str, Any]
    runtime: FederationRuntime
    plan: LinkPlan

    def home(self, user: str) -> Path:
        return self.state / "homes" / user

    def party(self, slug: str) -> PartyPlan:
        user = PARTIES[slug]
        return PartyPlan(slug=slug, user=user, data_folder=self.home(user) / "fed-data")

    def party_folder(self, slug: str) -> Path:
        return self.plan.folder / "parties" / slug

    def new_runtime(self) -> FederationRuntime:
        return FederationRuntime(self.state, self.settings, FLOWER_BIN)

    async def cli(self, *args: str) -> dict[str, Any]:
        """werkhub's own ``flwr`` against the federation (``--format json``)."""
        home = self.plan.folder / "flwr-home"
        return await flwr(FLOWER_BIN, home, *args, CONNECTION, what="test")

    async def nodes(self) -> dict[str, str]:
        """node id -> status from ``flwr supernode list``."""
        listing = await self.cli("supernode", "list")
        return {n["node-id"]: n["status"] for n in listing["nodes"]}

    async def wait_run(self, run_id: int, timeout: float = 240) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.runtime.run_status(self.plan, run_id)
            if status["status"] != "running":
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"run {run_id} still running after {timeout} s")
            await asyncio.sleep(2)

    async def wait_nodes(self, want: dict[str, str], timeout: float = 90) -> dict[str, str]:
        """Wait until ``flwr supernode list`` shows each node id of ``want`` in its status."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            seen = await self.nodes()
            if all(seen.get(n) == s for n, s in want.items()):
                return seen
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"nodes {seen} never reached {want}")
            await asyncio.sleep(1)

    def activations(self, node_id: str) -> int:
        """How often the SuperLink logged that it activated ``node_id``."""
        log = (self.plan.folder / "link.log").read_text(errors="replace")
        return log.count(f"Activated node_id={node_id}")

    async def wait_activated(self, node_id: str, count: int, timeout: float = 150) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.activations(node_id) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"node {node_id} not activated {count} times")
            await asyncio.sleep(1)

    async def wait_exit(self, slug: str, timeout: float = 90) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.runtime.node_alive(self.plan.federation_id, slug):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the SuperNode of {slug} still runs after {timeout} s")
            await asyncio.sleep(0.5)

    async def start_three(self) -> dict[str, str]:
        """Register and start acme, beta and gamma; slug -> node id once all are online."""
        ids = {s: await self.runtime.register(self.plan, self.party(s)) for s in THREE}
        for slug in THREE:
            await self.runtime.start_node(self.plan, self.party(slug))
        await self.wait_nodes({i: "online" for i in ids.values()})
        return ids

    async def wait_rounds(self, run_id: int, count: int, timeout: float = 180) -> None:
        path = self.run_folder(run_id) / "rounds.jsonl"
        deadline = asyncio.get_running_loop().time() + timeout
        while not path.is_file() or len(path.read_text().splitlines()) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"run {run_id} has not finished round {count}")
            await asyncio.sleep(0.5)

    def rounds(self, run_id: int) -> list[dict[str, Any]]:
        text = (self.run_folder(run_id) / "rounds.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def run_folder(self, run_id: int) -> Path:
        return self.plan.folder / "runs" / str(run_id)

    def local_rows(self, slug: str, run_id: int, name: str = "local.jsonl") -> list[dict]:
        path = self.party_folder(slug) / "out" / str(run_id) / name
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_people(state: Path, settings: dict[str, Any]) -> None:
    for seed, user in enumerate(PARTIES.values()):
        home = state / "homes" / user
        data = home / "fed-data"
        data.mkdir(parents=True)
        (data / "points.csv").write_text(points(seed))
        (home / "secret.txt").write_text(f"{user}'s own notes\n")
        uid = uid_of(settings, user)
        for path in (home, data, data / "points.csv", home / "secret.txt"):
            os.chown(path, uid, uid)
        home.chmod(0o700)


@asynccontextmanager
async def runtime_world(federation_id: int = 1) -> AsyncIterator[RuntimeWorld]:
    base = Path(tempfile.mkdtemp(prefix="wh-fedrt-", dir="/tmp"))
    previous = os.environ.get(UID_REGISTRY_VAR)
    os.environ[UID_REGISTRY_VAR] = str(base / "uids.json")
    umask = os.umask(0o077)  # as werkhub up sets it: new folders are private
    try:
        base.chmod(0o711)
        state = base / "state"
        state.mkdir(mode=0o711)
        settings = {
            "isolation": "bubblewrap",
            "state_root": str(state),
            "hidden": [],
            "uid_base": UID_BASE,
            "uid_count": 40,
            "device_dir": "/dev",
            "max_processes": 512,
            "read_only": [],
            "mem_limit": "",
            "cpu_limit": None,
        }
        make_people(state, settings)
        plan = LinkPlan(federation_id, OWNER, state / "federations" / str(federation_id))
        runtime = FederationRuntime(state, settings, FLOWER_BIN)
        world = RuntimeWorld(base, state, settings, runtime, plan)
        try:
            yield world
        finally:
            await world.runtime.close()
    finally:
        os.umask(umask)
        if previous is None:
            os.environ.pop(UID_REGISTRY_VAR, None)
        else:
            os.environ[UID_REGISTRY_VAR] = previous
        shutil.rmtree(base, ignore_errors=True)


def listening_socket() -> socket.socket:
    """A host loopback port that accepts (a stand-in for the hub's port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def uids_below(pid: int) -> set[int]:
    """The real uids of the processes below ``pid``."""
    uids = set()
    for child in descendants(pid):
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    uids.add(int(line.split()[1]))
        except OSError:
            continue
    return uids
