"""The Flower runtime of federations against real Flower: a SuperLink in the owner's
sandbox and SuperNodes in the parties' sandboxes (bubblewrap, their own uids), TLS and
SuperNode authentication on, driven through :class:`FederationRuntime` (no hub)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.federation.runtime_world import (
    FLOWER_BIN,
    OWNER,
    PARTIES,
    THREE,
    TINY_APP,
    RuntimeWorld,
    can_run,
    listening_socket,
    runtime_world,
    uids_below,
)
from werkhub.federation.pki import Pki, make_ca, make_node_keys
from werkhub.federation.runtime import FederationRuntime
from werkhub.sandbox.prepare import uid_of

pytestmark = pytest.mark.skipif(bool(can_run()), reason=can_run() or "runs")


async def test_three_parties_train_a_run_to_its_end() -> None:
    """Three parties registered and started; a run of the tiny app finishes: final.json
    and model.npz, each round aggregated from three parties, each party's local rows,
    bytes through each party's relay; every Flower process under its person's uid."""
    async with runtime_world() as w:
        info = await w.runtime.ensure_link(w.plan)
        assert info.address.startswith("127.0.0.1:") and info.ca_path.is_file()
        ids = await w.start_three()
        assert len(set(ids.values())) == 3
        # registering again is a no-op: same node id, no second key
        assert await w.runtime.register(w.plan, w.party("acme")) == ids["acme"]
        run_id = await w.runtime.submit(w.plan, TINY_APP, {"num-server-rounds": 2})
        status = await w.wait_run(run_id)
        assert status == {"status": "finished", "detail": ""}, status
        final = json.loads((w.run_folder(run_id) / "final.json").read_text())
        assert final["rounds"] == 2 and final["model"] == "model.npz"
        assert (w.run_folder(run_id) / "model.npz").is_file()
        assert [r["parties"] for r in w.rounds(run_id)] == [3, 3]
        for slug in THREE:
            rows = w.local_rows(slug, run_id)
            assert [r["round"] for r in rows] == [1, 2] and rows[0]["examples"] == 60
        traffic = w.runtime.traffic(1)
        assert set(traffic) == set(THREE)
        for slug, counts in traffic.items():
            assert counts["sent"] > 1000 and counts["received"] > 1000, (slug, counts)
        # who ran what: the ServerApp as the owner, each ClientApp as its party user
        owner_uid = uid_of(w.settings, OWNER)
        assert (w.run_folder(run_id) / "final.json").stat().st_uid == owner_uid
        assert owner_uid in uids_below(info.pid)
        for slug in THREE:
            local = w.party_folder(slug) / "out" / str(run_id) / "local.jsonl"
            assert local.stat().st_uid == uid_of(w.settings, PARTIES[slug])
        node = w.runtime._nodes[(1, "acme")].managed.proc.pid
        assert uid_of(w.settings, PARTIES["acme"]) in uids_below(node)
    assert not uids_below(info.pid)  # all stopped


def _supernode(w: RuntimeWorld, key: Path, ca: list[str], port: int) -> tuple[int, str]:
    """A SuperNode started by hand (no sandbox) straight at the SuperLink's port: its exit
    status and output (a file: the SuperExec it starts keeps a pipe open)."""
    home = w.base / "intruder"
    home.mkdir(exist_ok=True)
    argv = [str(FLOWER_BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}", *ca]
    argv += ["--auth-supernode-private-key", str(key), "--max-retries", "2"]
    argv += ["--max-wait-time", "15", "--port", str(_free_port())]
    env = {"PATH": f"{FLOWER_BIN}:/usr/bin:/bin", "HOME": str(home), "FLWR_HOME": str(home)}
    log = home / "node.log"
    with log.open("w") as out:
        done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=120)
    return done.returncode, log.read_text()


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    """TLS to ``127.0.0.1:port``: the protocol version agreed."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_tls_is_real_a_supernode_without_the_federations_ca_cannot_connect() -> None:
    """The SuperLink answers TLS only, with a certificate of the federation's CA for
    127.0.0.1: a client trusting that CA gets through, one trusting the system's CAs (a
    SuperNode without the CA) or another federation's CA is refused, even holding a
    registered key; a SuperNode that insists on plain HTTP gets nowhere either."""
    async with runtime_world() as w:
        info = await w.runtime.ensure_link(w.plan)
        other = Pki(w.base / "other-federation")
        make_ca(other, "federation-2")
        node_id = await w.runtime.register(w.plan, w.party("acme"))
        port = int(info.address.rsplit(":", 1)[1])
        # the blocking clients in threads: werkhub's relays run on this event loop
        good = ssl.create_default_context(cafile=str(info.ca_path))
        assert await asyncio.to_thread(_handshake, port, good) in ("TLSv1.2", "TLSv1.3")
        for context in (
            ssl.create_default_context(),
            ssl.create_default_context(cafile=str(other.ca_cert)),
        ):
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.to_thread(_handshake, port, context)
        key = w.party_folder("acme") / "keys" / "node.key"
        for ca in ([], ["--root-certificates", str(other.ca_cert)]):
            code, output = await asyncio.to_thread(_supernode, w, key, ca, port)
            assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in output, output[-2000:]
        code, output = await asyncio.to_thread(_supernode, w, key, ["--insecure"], port)
        assert code != 0, output[-2000:]
        assert (await w.nodes())[node_id] == "registered"  # never online


async def test_revoked_and_unknown_keys_are_refused() -> None:
    """An unregistered party's SuperNode is stopped and, started again with its old key,
    refused: it exits, ``flwr supernode list`` shows its node as unregistered and never
    online again, the SuperLink logs "No SuperNode found with the given public key". A
    key never registered is refused the same way and no node appears for it. The revoked
    party can register again (a new key pair) and rejoins."""
    async with runtime_world() as w:
        ids = await w.start_three()
        await w.runtime.unregister(w.plan, "gamma")
        assert not w.runtime.node_alive(1, "gamma")
        gamma = w.party_folder("gamma")
        assert not (gamma / "keys").exists() and (gamma / "revoked" / "1" / "node.key").is_file()
        assert (await w.nodes())[ids["gamma"]] == "unregistered"
        # the old key, put back where the SuperNode reads it: refused
        shutil.copytree(gamma / "revoked" / "1", gamma / "keys")
        await w.runtime.start_node(w.plan, w.party("gamma"))
        await w.wait_exit("gamma")
        assert "Failed to activate SuperNode" in (gamma / "node.log").read_text()
        # a key never registered (party delta): refused, no node for it
        make_node_keys(w.party_folder("delta") / "keys", "delta")
        await w.runtime.start_node(w.plan, w.party("delta"))
        await w.wait_exit("delta")
        assert "Failed to activate SuperNode" in (w.party_folder("delta") / "node.log").read_text()
        link_log = (w.plan.folder / "link.log").read_text()
        assert link_log.count("No SuperNode found with the given public key") >= 2
        nodes = await w.nodes()
        assert set(nodes) == set(ids.values())
        assert nodes[ids["gamma"]] == "unregistered"
        assert nodes[ids["acme"]] == nodes[ids["beta"]] == "online"
        # registering again makes a new key pair, which Flower takes
        shutil.rmtree(gamma / "keys")
        again = await w.runtime.register(w.plan, w.party("gamma"))
        assert again != ids["gamma"]
        await w.runtime.start_node(w.plan, w.party("gamma"))
        await w.wait_nodes({again: "online"})


async def test_a_party_sees_only_its_own_data_and_reaches_only_the_superlink() -> None:
    """The ClientApp of each party tries to read the other parties' data folders and
    homes, its own home and its own data at /data, and to connect to a host port (a
    stand-in for the hub) and to the SuperLink's port directly: only /data and the relay
    inside its own network work; through the relay, Flower's Control API (list nodes,
    list runs) answers 403 while the Fleet API answers Flower's own (4xx to an empty
    request)."""
    async with runtime_world() as w:
        info = await w.runtime.ensure_link(w.plan)
        await w.start_three()
        homes = {slug: w.home(PARTIES[slug]) for slug in THREE}
        paths = ["/data/points.csv"]
        for home in homes.values():
            paths += [str(home / "fed-data" / "points.csv"), str(home / "secret.txt")]
        paths.append(str(w.plan.folder / "pki" / "ca.key"))
        hub = listening_socket()
        addresses = [f"127.0.0.1:{hub.getsockname()[1]}", info.address, "127.0.0.1:9092"]
        # Flower's Control API shares the SuperLink's port and asks for no credentials:
        # open to werkhub (TLS with the CA) on the host ...
        assert "nodes" in await w.cli("supernode", "list")
        # ... but the relay passes only the Fleet API
        control = "https://127.0.0.1:9092/v1/control/list-nodes"
        runs = "https://127.0.0.1:9092/v1/control/list-runs"
        fleet = "https://127.0.0.1:9092/v1/fleet/get-run"
        config = {
            "num-server-rounds": 1,
            "probe-path": ",".join(paths),
            "probe-address": ",".join(addresses),
            "probe-url": ",".join([control, runs, fleet]),
        }
        try:
            run_id = await w.runtime.submit(w.plan, TINY_APP, config)
            assert (await w.wait_run(run_id))["status"] == "finished"
        finally:
            hub.close()
        for slug in THREE:
            (probe,) = w.local_rows(slug, run_id, "probes.jsonl")
            assert probe["party"] == slug
            assert probe["/data/points.csv"].startswith("read "), probe
            for path in paths[1:]:
                assert probe[path].startswith("error: FileNotFoundError"), (slug, path, probe)
            for address in addresses[:2]:
                assert probe[address].startswith("error: ConnectionRefusedError"), probe
            assert probe["127.0.0.1:9092"] == "connected"  # its relay, the one way out
            assert probe[control] == probe[runs] == "status 403", probe
            assert probe[fleet] != "status 403" and probe[fleet].startswith("status 4"), probe
        assert all(n.relay.refused >= 2 for n in w.runtime._nodes.values())


async def test_without_a_sandbox_the_runtime_runs_plain_processes() -> None:
    """A development install without a sandbox: the same SuperLink and SuperNodes as
    werkhub's own children (host paths, host ports, the same TLS relay) train a run."""
    async with runtime_world() as w:
        await w.runtime.close()
        w.runtime = FederationRuntime(w.state, {}, FLOWER_BIN)
        ids = {s: await w.runtime.register(w.plan, w.party(s)) for s in ("acme", "beta")}
        for slug in ids:
            await w.runtime.start_node(w.plan, w.party(slug))
        await w.wait_nodes({i: "online" for i in ids.values()})
        run_id = await w.runtime.submit(w.plan, TINY_APP, {"num-server-rounds": 1})
        assert (await w.wait_run(run_id))["status"] == "finished"
        assert [r["parties"] for r in w.rounds(run_id)] == [2]
        assert all(c["sent"] > 1000 for c in w.runtime.traffic(1).values())
