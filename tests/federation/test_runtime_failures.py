"""The Flower runtime when things go wrong: a party's SuperNode killed mid-run, and
werkhub's runtime stopped and started again on the same state."""

from __future__ import annotations

import shutil

import pytest

from tests.federation.runtime_world import (
    TINY_APP,
    can_run,
    descendants,
    runtime_world,
)

pytestmark = pytest.mark.skipif(bool(can_run()), reason=can_run() or "runs")


async def test_a_party_killed_below_the_minimum_fails_the_run_and_comes_back() -> None:
    """SIGKILL to gamma's SuperNode after round 1 with a minimum of 3: the run ends failed,
    and error.json and run_status say how many replied and how many it needs; nothing
    final is written. A SuperNode started again right after a SIGKILL is refused while
    Flower still counts the killed one as online, and retried until taken. (A party lost
    above the minimum is tolerated: tests/federation/test_federation_runs.py kills one in
    a real werkhub's run with the template app.)"""
    async with runtime_world() as w:
        ids = await w.start_three()
        config = {"num-server-rounds": 3, "round-pause": 2.0, "round-timeout": 30.0}
        run_id = await w.runtime.submit(w.plan, TINY_APP, {**config, "min-parties": 3})
        await w.wait_rounds(run_id, 1)
        assert w.rounds(run_id)[0]["parties"] == 3
        await w.runtime.stop_node(1, "gamma", kill=True)
        assert not w.runtime.node_alive(1, "gamma")
        status = await w.wait_run(run_id)
        assert status["status"] == "failed", status
        assert "this federation needs at least 3" in status["detail"], status
        error = (w.run_folder(run_id) / "error.json").read_text()
        assert "needs at least 3" in error
        assert not (w.run_folder(run_id) / "final.json").exists()
        # gamma started again; beta SIGKILLed and started again at once: Flower refuses
        # it while it counts the killed one as online, the runtime retries until taken
        assert w.activations(ids["gamma"]) == 1
        await w.runtime.start_node(w.plan, w.party("gamma"))
        await w.runtime.stop_node(1, "beta", kill=True)
        await w.runtime.start_node(w.plan, w.party("beta"))
        await w.wait_activated(ids["beta"], 2)
        assert "could not be activated" in (w.plan.folder / "link.log").read_text()
        await w.wait_activated(ids["gamma"], 2)


async def test_restart_keeps_the_ca_and_the_registrations() -> None:
    """Stop the runtime (every process), start a new one on the same state: the same CA
    and SuperLink certificate; a registered party reconnects without registering again
    (same node id online); a revoked party's old key is still refused."""
    async with runtime_world() as w:
        ids = await w.start_three()
        await w.runtime.unregister(w.plan, "gamma")
        info = await w.runtime.ensure_link(w.plan)
        ca = info.ca_path.read_bytes()
        server = (w.plan.folder / "pki" / "link" / "server.pem").read_bytes()
        await w.runtime.close()
        assert not descendants(info.pid) and not w.runtime.node_alive(1, "acme")
        w.runtime = w.new_runtime()
        # the owner's flwr configuration names the SuperLink's port before it is back ...
        assert info.address in w.runtime.connection_toml(w.plan, "fed-1", "/home/owner/.flwr")
        again = await w.runtime.ensure_link(w.plan)
        # ... and it comes back on that port (free again)
        assert again.address == info.address
        # stopped gracefully, the SuperNodes said goodbye: offline, not stale "online"
        before = await w.nodes()
        assert before[ids["acme"]] == before[ids["beta"]] == "offline", before
        assert again.pid != info.pid
        assert again.ca_path.read_bytes() == ca
        assert (w.plan.folder / "pki" / "link" / "server.pem").read_bytes() == server
        for slug in ("acme", "beta"):
            await w.runtime.start_node(w.plan, w.party(slug))
        seen = await w.wait_nodes({ids["acme"]: "online", ids["beta"]: "online"})
        assert seen[ids["gamma"]] == "unregistered" and len(seen) == 3
        gamma = w.party_folder("gamma")
        shutil.copytree(gamma / "revoked" / "1", gamma / "keys")
        await w.runtime.start_node(w.plan, w.party("gamma"))
        await w.wait_exit("gamma")
        assert "Failed to activate SuperNode" in (gamma / "node.log").read_text()
        assert (await w.nodes())[ids["gamma"]] == "unregistered"
        run_id = await w.runtime.submit(w.plan, TINY_APP, {"num-server-rounds": 1})
        status = await w.wait_run(run_id)
        assert status["status"] == "finished", status
        assert [r["parties"] for r in w.rounds(run_id)] == [2]
