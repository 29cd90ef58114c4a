"""No-show through a real ``werkhub up`` against the private cluster: bookings whose user
starts nothing are marked no-show by the ledger's tick (``booking.no_show_minutes: 1``),
and the next reconciliation round removes what Slurm held for them: the reservations of
whole nodes, and the partition and hold job of a booking of part of a node. Its own hub
(the module of ``test_service_sync.py`` keeps the default no-show time, which its tests
would otherwise run into)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.slurm.cluster import SlurmCluster
from tests.slurm.support import MAPPING, PARTITION
from tests.slurm.test_service_sync import (
    API,
    POLICIES,
    RECONCILE_SECONDS,
    book,
    hold_jobs,
    partition_state,
    reservations,
)
from tests.support.hub import Werkhub, make_werkhub
from tests.support.summary import note
from tests.support.wait import wait_for


@pytest.fixture(scope="module")
def hub(
    slurm_cluster: SlurmCluster, os_users: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "slurm": {
            "enabled": True,
            "conf": str(slurm_cluster.conf),
            "partition": PARTITION,
            "user_mapping": MAPPING.model_dump(),
            "reconcile_seconds": RECONCILE_SECONDS,
            "retry_seconds": 20,
        },
        "booking": {"policies": POLICIES, "no_show_minutes": 1, "tick_seconds": 1},
        "services": {"mlflow": {"enabled": False}},
    }
    werkhub = make_werkhub(tmp_path_factory.mktemp("slurm-no-show"), extra)
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


def test_a_no_show_removes_what_slurm_holds(
    hub: Werkhub, slurm_cluster: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    alice, bob = hub.create_user("alice"), hub.create_user("bob")
    with hub.client(alice) as api:
        wholes = [book(api).json(), book(api).json()]  # node1 and node2
    with hub.client(bob) as api:
        part = book(api).json()  # one GPU of node3
    assert [b["devices"] for b in wholes] == [["node1/0"], ["node2/0"]]
    assert part["devices"][0].startswith("node3/")
    names = [f"werkhub-b{b['id']}" for b in wholes]
    assert set(names) <= set(reservations(slurm_cluster))
    hold = f"werkhub-h{part['id']}-node3"
    wait_for(
        lambda: [s for _, s in hold_jobs(slurm_cluster, hold)] == ["RUNNING"],
        timeout=RECONCILE_SECONDS + 10,
        what=f"{hold} to run",
    )
    # nobody starts a server: a minute after the slot's start all three are no-shows
    began = time.monotonic()

    def states() -> list[str]:
        found = []
        for token, booking in ((alice, wholes[0]), (alice, wholes[1]), (bob, part)):
            with hub.client(token) as api:
                found.append(api.get(f"{API}/bookings/{booking['id']}").json()["state"])
        return found

    wait_for(lambda: states() == ["no_show"] * 3, timeout=90, interval=0.5, what="no-shows")
    marked = time.monotonic()
    wait_for(
        lambda: (
            not set(names) & set(reservations(slurm_cluster))
            and not hold_jobs(slurm_cluster, hold)
            and not partition_state(slurm_cluster, f"werkhub-b{part['id']}")
        ),
        timeout=RECONCILE_SECONDS + 10,
        interval=0.2,
        what="the reservations, the hold job and the partition to go",
    )
    gone = time.monotonic()
    with hub.admin() as api:
        lines = [e["line"] for e in api.get(f"{API}/slurm/status").json()["recent"]]
    for name in names:
        assert f"deleted {name}: no booked or active booking needs it" in lines, lines
    assert f"deleted {hold}: no booked or active booking needs it" in lines, lines
    note(
        request.config,
        f"slurm       no-show marked {marked - began:.0f} s after booking; Slurm's holds gone "
        f"{gone - marked:.1f} s later (bound {RECONCILE_SECONDS + 10} s)",
    )
