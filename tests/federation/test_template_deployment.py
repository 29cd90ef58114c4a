"""The federated quality-inspection template's app on werkhub's deployment engine
(FederationRuntime: SuperLink in the owner's sandbox with TLS and SuperNode authentication,
each party's SuperNode in its user's sandbox with its data at /data, read-only): three
parties train, each writes its local.jsonl into its own scratch folder, and a party killed
mid-run (SIGKILL) is tolerated down to the minimum of two parties."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.federation.runtime_world import THREE, RuntimeWorld, can_run, runtime_world
from tests.federation.test_secagg import APP, PARTIES, flower
from werkhub.sandbox.prepare import uid_of

pytestmark = pytest.mark.skipif(bool(can_run()), reason=can_run() or "runs")


def give_data(world: RuntimeWorld, source: Path) -> None:
    """Each party's surfaces.npz into its data folder, owned by the party user."""
    for slug, party in zip(THREE, PARTIES, strict=True):
        plan = world.party(slug)
        target = plan.data_folder / "surfaces.npz"
        with np.load(source / party / "surfaces.npz") as arrays:
            np.savez(target, images=arrays["images"], labels=arrays["labels"])
        uid = uid_of(world.settings, plan.user)
        os.chown(target, uid, uid)


async def test_three_parties_train_and_a_killed_party_is_tolerated(tmp_path: Path) -> None:
    for party in PARTIES:
        done = flower(
            [
                *("-m", "fedinspect.data", "prepare", "--party", party),
                *("--out", str(tmp_path / party), "--n", "120"),
            ],
            APP,
            120,
        )
        assert done.returncode == 0, done.stdout
    async with runtime_world() as world:
        give_data(world, tmp_path)
        await world.start_three()
        config = {
            "num-server-rounds": 3,
            "min-parties": 2,
            "n-test": 100,
            "n-reference": 100,
            "round-timeout": 30.0,
        }
        run_id = await world.runtime.submit(world.plan, APP, config)
        await world.wait_rounds(run_id, 1, timeout=300)
        await world.runtime.stop_node(world.plan.federation_id, "gamma", kill=True)
        status = await world.wait_run(run_id, timeout=600)
        assert status["status"] == "finished", status
        rounds = world.rounds(run_id)
        assert [r["round"] for r in rounds] == [1, 2, 3]
        assert rounds[0]["parties"] == 3 and rounds[-1]["parties"] == 2
        folder = world.run_folder(run_id)
        assert (folder / "final.json").is_file() and (folder / "model.npz").is_file()
        for slug in ("acme", "beta"):
            local = world.local_rows(slug, run_id)
            assert [row["round"] for row in local] == [1, 2, 3]
            assert all(row["examples"] == 120 for row in local)
        killed = [row["round"] for row in world.local_rows("gamma", run_id)]
        assert killed[:1] == [1] and 3 not in killed
