"""The federated quality-inspection template's app on werkhub's deployment engine
(FederationRuntime: SuperLink in the owner's sandbox with TLS and SuperNode authentication,
each party's SuperNode in its user's sandbox with its data at /data, read-only): three
parties train with SecAgg+, and the aggregator sees only the sum (the proof of
test_secagg.py, on the real engine). The template app outliving a party killed mid-run
(SIGKILL) is tested through a real werkhub in test_federation_runs.py, the runtime's own
handling of a kill below the minimum in test_runtime_failures.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.federation.runtime_world import THREE, RuntimeWorld, can_run, runtime_world
from tests.federation.test_secagg import (
    APP,
    PARTIES,
    assert_masked,
    assert_sum,
    collect,
    prepare_data,
    recording_config,
)
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


async def test_secagg_on_the_deployment_engine_shows_the_aggregator_only_the_sum(
    tmp_path: Path,
) -> None:
    """test_secagg.py's proof on werkhub's deployment engine: with SecAgg+ and the recording
    switch, no reply the ServerApp (in the owner's sandbox) received equals or correlates with
    a party's true update, and the aggregate is their weighted mean within the quantisation."""
    data_root = prepare_data(tmp_path / "parties")
    async with runtime_world() as world:
        give_data(world, data_root)
        await world.start_three()
        config = {**recording_config(secure=True), "min-parties": 3, "round-timeout": 120.0}
        run_id = await world.runtime.submit(world.plan, APP, config)
        status = await world.wait_run(run_id, timeout=600)
        assert status["status"] == "finished", status
        party_out = {
            party: world.party_folder(slug) / "out" / str(run_id)
            for slug, party in zip(THREE, PARTIES, strict=True)
        }
        recording = collect(world.run_folder(run_id), party_out, "")
        assert_masked(recording)
        assert_sum(recording)
