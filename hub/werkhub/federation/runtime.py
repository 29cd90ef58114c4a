"""The Flower runtime of federations: :class:`FederationRuntime`, the one facade the
service uses (docs/federated-learning.md, "How a federation runs").

Per federation one SuperLink (owner's sandbox) and one SuperNode per party (the party
user's sandbox, behind a relay that counts its bytes). Everything it starts dies with
werkhub and is stopped by :meth:`FederationRuntime.close`. Its state lies in
``<state>/federations/<fid>/`` (:mod:`werkhub.federation.layout`): a new runtime on the
same state brings back the same CA and the SuperNode registrations."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkhub.errors import Conflict, NotFound
from werkhub.federation.commands import CONNECTION, connection_toml, run_argv, run_state
from werkhub.federation.flower import FlowerError, check_flower_bin, flower_paths, flwr
from werkhub.federation.layout import FederationFolder
from werkhub.federation.pki import fingerprint, make_node_keys
from werkhub.federation.process import Managed, stop, tail
from werkhub.federation.superlink import StartedLink, start_link
from werkhub.federation.supernode import Node, socket_folder, start_node

#: Flower keeps a SuperNode that vanished "online" for two heartbeats (2 x 30 s): a new
#: SuperNode with its key is refused meanwhile and started again after a pause
ACTIVATION_RETRY_SECONDS = 90.0
ACTIVATION_RETRY_PAUSE = 5.0
#: what a refused SuperNode prints
ACTIVATION_REFUSED = "Failed to activate SuperNode"


@dataclass(frozen=True)
class LinkPlan:
    """What the service knows about a federation."""

    federation_id: int
    owner: str  # hub user: the SuperLink runs in their sandbox
    folder: Path  # <state>/federations/<fid>


@dataclass(frozen=True)
class PartyPlan:
    slug: str  # organisation slug
    user: str  # party user (accepting org admin)
    data_folder: Path  # absolute host path of the data folder (inside that user's home)
    gpu_devices: tuple[str, ...] = ()  # host device paths from the party's booking


@dataclass(frozen=True)
class LinkInfo:
    address: str  # "127.0.0.1:PORT"
    ca_path: Path  # the federation CA certificate (public)
    pid: int


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings of ``federation:`` in werkhub.yaml that the runtime applies."""

    link_start_timeout: float = 60.0
    node_max_wait_seconds: int = 600
    link_mem_limit: str = ""
    link_cpu_limit: float | None = None
    node_mem_limit: str = ""
    node_cpu_limit: float | None = None
    max_processes: int | None = None

    @classmethod
    def of(cls, section: Any) -> RuntimeOptions:
        """From werkhub.yaml's ``federation:`` section."""
        return cls(
            link_start_timeout=section.link_start_timeout,
            node_max_wait_seconds=section.node_max_wait_seconds,
            link_mem_limit=section.link_mem_limit,
            link_cpu_limit=section.link_cpu_limit,
            node_mem_limit=section.node_mem_limit,
            node_cpu_limit=section.node_cpu_limit,
            max_processes=section.max_processes,
        )


@dataclass
class _Link:
    started: StartedLink
    folder: FederationFolder

    @property
    def managed(self) -> Managed:
        return self.started.managed

    @property
    def port(self) -> int:
        return self.started.port


class FederationRuntime:
    def __init__(
        self,
        state: Path,
        sandbox: dict[str, Any],
        flower_bin: Path,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.state = state
        self.flower_bin = check_flower_bin(flower_bin)
        self.options = options or RuntimeOptions()
        self.sandbox = sandbox
        self._links: dict[int, _Link] = {}
        self._nodes: dict[tuple[int, str], Node] = {}
        self._traffic: dict[int, dict[str, dict[str, int]]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._sockets = Path(tempfile.mkdtemp(prefix="wh-fed-"))
        os.chmod(self._sockets, 0o711)

    # -- sandboxes ------------------------------------------------------------------
    def _settings(self, mem: str, cpu: float | None) -> dict[str, Any]:
        if not self.sandbox:
            return {}
        read_only = [*self.sandbox.get("read_only", []), *flower_paths(self.flower_bin)]
        settings = {**self.sandbox, "read_only": read_only}
        settings.update(mem_limit=mem or self.sandbox.get("mem_limit", ""), cpu_limit=cpu)
        if self.options.max_processes:
            settings["max_processes"] = self.options.max_processes
        return settings

    def _folder(self, plan: LinkPlan) -> FederationFolder:
        return FederationFolder(plan.folder)

    def _lock(self, federation_id: int) -> asyncio.Lock:
        return self._locks.setdefault(federation_id, asyncio.Lock())

    # -- the SuperLink --------------------------------------------------------------
    async def ensure_link(self, plan: LinkPlan) -> LinkInfo:
        """The federation's SuperLink, started unless it runs (the CA is made once)."""
        async with self._lock(plan.federation_id):
            link = self._links.get(plan.federation_id)
            if link is None or not link.managed.alive:
                if link is not None:
                    await link.started.stop(grace=2)
                folder = self._folder(plan)
                options = self.options
                started = await start_link(
                    self._settings(options.link_mem_limit, options.link_cpu_limit),
                    self.flower_bin,
                    plan.owner,
                    folder,
                    f"federation-{plan.federation_id}",
                    options.link_start_timeout,
                    self._sockets / f"{int(plan.federation_id)}-link",
                )
                link = self._links[plan.federation_id] = _Link(started, folder)
            return LinkInfo(
                f"127.0.0.1:{link.port}", link.folder.pki / "ca.pem", link.managed.proc.pid
            )

    async def stop_link(self, federation_id: int) -> None:
        """Stop the SuperLink and the federation's SuperNodes (they would only retry)."""
        for fid, slug in [k for k in self._nodes if k[0] == federation_id]:
            await self.stop_node(fid, slug)
        link = self._links.pop(federation_id, None)
        if link is not None:
            await link.started.stop()

    async def _cli(self, plan: LinkPlan, *args: str, what: str) -> dict[str, Any]:
        await self.ensure_link(plan)
        return await flwr(self.flower_bin, self._folder(plan).flwr_home, *args, what=what)

    # -- parties --------------------------------------------------------------------
    async def register(self, plan: LinkPlan, party: PartyPlan) -> str:
        """Make the party's key pair (once) and register its public key with the
        SuperLink (once): Flower's node id."""
        party_folder = self._folder(plan).party(party.slug)
        _, public = await asyncio.to_thread(
            make_node_keys, party_folder.keys, f"{party.slug}@federation-{plan.federation_id}"
        )
        print_ = fingerprint(public)
        known = _read_json(party_folder.node_json)
        if known.get("fingerprint") == print_ and known.get("node_id"):
            return str(known["node_id"])
        answer = await self._cli(
            plan,
            "supernode",
            "register",
            str(public),
            CONNECTION,
            what=f"registering party {party.slug}",
        )
        node_id = str(answer.get("node-id") or "")
        if not node_id.isdigit():
            raise FlowerError(f"registering party {party.slug}: Flower gave no node id")
        _write_json(party_folder.node_json, {"node_id": node_id, "fingerprint": print_})
        return node_id

    async def unregister(self, plan: LinkPlan, slug: str) -> None:
        """Stop the party's SuperNode and unregister its key: a later connect with it is
        refused. The key is kept under ``revoked/`` (Flower never accepts it again); a
        later :meth:`register` makes a new pair."""
        await self.stop_node(plan.federation_id, slug)
        party_folder = self._folder(plan).party(slug)
        known = _read_json(party_folder.node_json)
        if known.get("node_id"):
            try:
                await self._cli(
                    plan,
                    "supernode",
                    "unregister",
                    str(known["node_id"]),
                    CONNECTION,
                    what=f"unregistering party {slug}",
                )
            except FlowerError as error:
                if "not found" not in str(error).lower():
                    raise
        if party_folder.keys.is_dir():
            target = party_folder.revoked / str(len(_children(party_folder.revoked)) + 1)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.move(str(party_folder.keys), str(target))
        party_folder.node_json.unlink(missing_ok=True)

    async def start_node(self, plan: LinkPlan, party: PartyPlan) -> None:
        """Start the party's SuperNode (nothing if it runs).

        A registered party's SuperNode that Flower refuses because its key still counts
        as online (its last SuperNode died without saying goodbye: a SIGKILL, werkhub
        killed) is started again every few seconds until Flower's two heartbeats
        (:data:`ACTIVATION_RETRY_SECONDS`) have passed."""
        key = (plan.federation_id, party.slug)
        if key in self._nodes and self._nodes[key].managed.alive:
            return
        await self._start_node(plan, party, time.monotonic() + ACTIVATION_RETRY_SECONDS)

    async def _start_node(self, plan: LinkPlan, party: PartyPlan, retry_until: float) -> None:
        key = (plan.federation_id, party.slug)
        info = await self.ensure_link(plan)
        await self.stop_node(*key)
        link = self._links[plan.federation_id]
        folder = self._folder(plan)
        options = self.options
        node = await start_node(
            self._settings(options.node_mem_limit, options.node_cpu_limit),
            self.flower_bin,
            user=party.user,
            slug=party.slug,
            party=folder.party(party.slug),
            ca_cert=info.ca_path,
            data_folder=party.data_folder,
            gpu_devices=party.gpu_devices,
            link=link.started.socket or link.port,
            relay_folder=socket_folder(self._sockets, plan.federation_id, party.slug),
            max_wait=options.node_max_wait_seconds,
        )
        self._nodes[key] = node
        if retry_until > time.monotonic():
            watch = asyncio.create_task(self._retry_refused(plan, party, node, retry_until))
            self._watchers.add(watch)
            watch.add_done_callback(self._watchers.discard)

    async def _retry_refused(
        self, plan: LinkPlan, party: PartyPlan, node: Node, retry_until: float
    ) -> None:
        key = (plan.federation_id, party.slug)
        code = await node.managed.proc.wait()
        party_folder = self._folder(plan).party(party.slug)
        if (
            code == 0
            or self._nodes.get(key) is not node
            or not _read_json(party_folder.node_json).get("node_id")
            or ACTIVATION_REFUSED not in tail(party_folder.log, 40)
        ):
            return
        await asyncio.sleep(ACTIVATION_RETRY_PAUSE)
        if self._nodes.get(key) is node and time.monotonic() < retry_until:
            await self.stop_node(*key)
            await self._start_node(plan, party, retry_until)

    async def stop_node(self, federation_id: int, slug: str, kill: bool = False) -> None:
        node = self._nodes.pop((federation_id, slug), None)
        if node is None:
            return
        try:
            await stop(node.managed, kill=kill)
        finally:
            counts = self._traffic.setdefault(federation_id, {}).setdefault(
                slug, {"sent": 0, "received": 0}
            )
            counts["sent"] += node.relay.sent
            counts["received"] += node.relay.received
            await node.relay.close()

    def node_alive(self, federation_id: int, slug: str) -> bool:
        node = self._nodes.get((federation_id, slug))
        return node is not None and node.managed.alive

    # -- runs -----------------------------------------------------------------------
    async def submit(self, plan: LinkPlan, app_dir: Path, run_config: dict[str, Any]) -> int:
        """``flwr run APP werkhub --format json``: Flower's run id."""
        if not (app_dir / "pyproject.toml").is_file():
            raise NotFound("the app folder has no pyproject.toml")
        argv = run_argv(str(self.flower_bin), str(app_dir), run_config)
        answer = await self._cli(plan, *argv[1:], what="starting a run")
        run_id = str(answer.get("run-id") or "")
        if not run_id.isdigit():
            raise FlowerError("starting a run: Flower gave no run id")
        return int(run_id)

    async def run_status(self, plan: LinkPlan, run_id: int) -> dict[str, Any]:
        """``{"status": "running|finished|failed|stopped", "detail": "..."}``; the detail
        of a failed run is the app's own ``error.json`` message where it wrote one."""
        answer = await self._cli(
            plan, "list", CONNECTION, "--run-id", str(int(run_id)), what=f"reading run {run_id}"
        )
        runs = answer.get("runs") or []
        if not runs:
            raise NotFound(f"Flower knows no run {run_id} in this federation")
        row = runs[0]
        status = run_state(str(row.get("status", "")))
        detail = str(row.get("status-details") or "")
        detail = "" if detail == "N/A" else detail
        error = _read_json(self._folder(plan).runs / str(int(run_id)) / "error.json")
        if status == "failed" and isinstance(error.get("message"), str):
            detail = error["message"][:1000]
        return {"status": status, "detail": detail}

    async def runs(self, plan: LinkPlan) -> list[tuple[int, str]]:
        """Every run Flower keeps for the federation: (its id, werkhub's status)."""
        answer = await self._cli(plan, "list", CONNECTION, what="listing runs")
        found = []
        for row in answer.get("runs") or []:
            run_id = str(row.get("run-id", "")) if isinstance(row, dict) else ""
            if run_id.isdigit():
                found.append((int(run_id), run_state(str(row.get("status", "")))))
        return found

    def link_running(self, federation_id: int) -> bool:
        link = self._links.get(federation_id)
        return link is not None and link.managed.alive

    def state_stamp(self, plan: LinkPlan) -> tuple[int, ...]:
        """Changes whenever the SuperLink writes its state database (a run pushed, a
        run's state moving on): a look at Flower's runs is due only then."""
        database = self._folder(plan).database
        stamp: list[int] = []
        for path in (database, database.with_name(f"{database.name}-wal")):
            try:
                found = path.stat()
            except OSError:
                stamp += [0, 0]
            else:
                stamp += [found.st_mtime_ns, found.st_size]
        return tuple(stamp)

    async def stop_run(self, plan: LinkPlan, run_id: int) -> None:
        await self._cli(plan, "stop", str(int(run_id)), CONNECTION, what=f"stopping run {run_id}")

    def connection_toml(self, plan: LinkPlan, name: str, flwr_home: str) -> str:
        """The ``config.toml`` for the owner's ``flwr run`` in ``flwr_home`` (absolute), the
        CA certificate next to it as ``ca.pem``: the SuperLink's port now, else the one it
        listened on last."""
        link = self._links.get(plan.federation_id)
        port = link.port if link is not None else _last_port(self._folder(plan))
        if port is None:
            raise Conflict("the federation's SuperLink has not run yet")
        return connection_toml(f"127.0.0.1:{port}", f"{flwr_home}/ca.pem", name)

    def traffic(self, federation_id: int) -> dict[str, dict[str, int]]:
        """Per party ``{"sent": n, "received": n}`` through its relay (since start)."""
        totals = {s: dict(c) for s, c in self._traffic.get(federation_id, {}).items()}
        for (fid, slug), node in self._nodes.items():
            if fid == federation_id:
                row = totals.setdefault(slug, {"sent": 0, "received": 0})
                row["sent"] += node.relay.sent
                row["received"] += node.relay.received
        return totals

    async def close(self) -> None:
        """Stop every SuperNode and SuperLink this runtime started."""
        for watch in list(self._watchers):
            watch.cancel()
        for fid, slug in list(self._nodes):
            await self.stop_node(fid, slug)
        for fid in list(self._links):
            await self.stop_link(fid)
        shutil.rmtree(self._sockets, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def _last_port(folder: FederationFolder) -> int | None:
    try:
        return int(folder.port_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _children(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []
