"""Slurm tier: one private Slurm cluster per session (tests/slurm/cluster.py) with one GPU
on node1 and node2 each and two on node3, werkhub's Slurm client for it, and the OS users
wh-alice and wh-bob (made for the session when missing, removed after).

The cluster's partitions preempt (tests/slurm/cluster.py): a job in ``gpu`` or ``cpu`` on
GPUs that a hold job of werkhub's takes for a booking of part of a node is requeued; after
each test every job (all partitions, hold jobs included), every reservation and every
booking partition ``werkhub-b*`` is removed.

Skipped, with the reason, only where the Slurm programs are missing (scripts/system-deps.sh
installs them when run as root) or the tests do not run as root (the daemons, the fake GPU
devices and jobs of other users need it)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.slurm import hubs
from tests.slurm.cluster import NodeSpec, SlurmCluster, missing_programs
from tests.slurm.support import MAPPING, PARTITION
from tests.support.summary import note
from werkhub.slurm.cluster import SlurmClient

NODES = (NodeSpec("node1", 1), NodeSpec("node2", 1), NodeSpec("node3", 2))
#: hub users of the tests whose OS users (wh-...) the session makes
HUB_USERS = ("alice", "bob")


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    missing = missing_programs()
    if missing:
        pytest.skip(
            f"slurm tier skipped: {', '.join(missing)} not installed (scripts/system-deps.sh "
            "installs slurmctld slurmd slurm-client munge when run as root)"
        )
    if os.geteuid() != 0:
        pytest.skip("slurm tier skipped: the private cluster's daemons need root")
    cluster = SlurmCluster.create(NODES, partition=PARTITION)
    began = time.monotonic()
    try:
        cluster.start()
        note(
            request.config,
            f"slurm       private cluster {', '.join(n.name for n in NODES)} idle in "
            f"{time.monotonic() - began:.1f} s under {cluster.root}",
        )
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def client(slurm_cluster: SlurmCluster) -> SlurmClient:
    return SlurmClient(str(slurm_cluster.conf), timeout=10, retry_seconds=60)


@pytest.fixture(scope="session")
def os_users() -> Iterator[dict[str, str]]:
    """Hub user -> OS user for alice and bob, made with werkhub's own ``useradd`` path."""
    with hubs.os_users(*HUB_USERS, mapping=MAPPING) as found:
        yield found


@pytest.fixture(autouse=True)
def clean_cluster(slurm_cluster: SlurmCluster) -> Iterator[None]:
    """Every test starts and ends with no reservation, no job and no booking partition
    (``werkhub-b<id>``, made for bookings of part of a node): jobs of every partition are
    cancelled, werkhub's hold jobs included. Before the test too: a module's werkhub may
    repair (make again) its reservations between its last test's clean-up and its own
    end, and the next module's ledger numbers its bookings from 1 again, so such a
    leftover ``werkhub-b3`` would collide with the new ``werkhub-b3``."""
    wipe(slurm_cluster)
    yield
    wipe(slurm_cluster)


def wipe(slurm_cluster: SlurmCluster) -> None:
    """Cancel every job, delete every reservation and booking partition, and wait until
    no job is left."""
    if not slurm_cluster.daemons["slurmctld"].process:
        slurm_cluster.start_controller()
    ids = slurm_cluster.run("squeue", "--all", "-h", "-o", "%i").stdout.split()
    slurm_cluster.cancel(*ids)
    out = slurm_cluster.scontrol("-o", "show", "reservation").stdout
    for line in out.splitlines():
        if line.startswith("ReservationName="):
            name = line.split()[0].partition("=")[2]
            slurm_cluster.scontrol("delete", f"ReservationName={name}")
    deadline = time.monotonic() + 60
    while slurm_cluster.run("squeue", "--all", "-h", "-t", "PD,R,CG,CF").stdout.strip():
        if time.monotonic() > deadline:
            raise AssertionError("jobs left after the test:\n" + slurm_cluster.logs())
        time.sleep(0.2)
    for line in slurm_cluster.scontrol("-o", "show", "partition").stdout.splitlines():
        name = line.split()[0].partition("=")[2] if line.startswith("PartitionName=") else ""
        if name.startswith("werkhub-b"):
            slurm_cluster.scontrol("delete", f"PartitionName={name}")
