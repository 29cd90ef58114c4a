"""Accounting with slurmdbd (a second private cluster, with MariaDB and slurmdbd, for this
module only): GPU time per booking from Slurm's own GPU TRES (``sacct -X -P``), no estimate;
jobs outside the booking are not counted; ``sreport reservation Utilization`` answers. The
cluster without slurmdbd (``sacct -c`` on the jobcomp file) is tested through the service in
``test_service_sync.py``. Skipped, with the reason, where slurmdbd or MariaDB is missing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.slurm.cluster import SlurmCluster, missing_programs
from tests.slurm.conftest import NODES
from tests.slurm.support import MAPPING, PARTITION, booking, hold, wait_job
from tests.support.summary import note
from werkhub.booking import ledger
from werkhub.booking.ledger import Slot, State
from werkhub.config.schema import SlurmSection
from werkhub.service.slurm_usage import SlurmUsage, spans
from werkhub.slurm import accounting, users
from werkhub.slurm.cluster import SlurmClient


@pytest.fixture(scope="module")
def dbd_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    missing = missing_programs(accounting=True)
    if missing:
        pytest.skip(
            f"slurmdbd accounting skipped: {', '.join(missing)} not installed "
            "(scripts/system-deps.sh installs slurmdbd mariadb-server when run as root)"
        )
    cluster = SlurmCluster.create(NODES, partition=PARTITION, accounting=True)
    began = time.monotonic()
    try:
        cluster.start()
        note(
            request.config,
            f"slurm       cluster with MariaDB and slurmdbd idle in "
            f"{time.monotonic() - began:.1f} s",
        )
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="module")
def dbd_client(dbd_cluster: SlurmCluster) -> SlurmClient:
    return SlurmClient(str(dbd_cluster.conf), timeout=20, retry_seconds=30)


def test_gpu_time_per_booking_from_slurms_gpu_tres(
    dbd_cluster: SlurmCluster, dbd_client: SlurmClient, os_users: dict[str, str]
) -> None:
    usage = SlurmUsage(
        SlurmSection(enabled=True, conf=str(dbd_cluster.conf), user_mapping=MAPPING), dbd_client
    )
    assert usage.detect() == "slurmdbd"
    alice = booking(21, "alice", ["node1/0"])
    assert hold(dbd_client, [alice]).ok
    mine = dbd_cluster.submit(os_users["alice"], "--reservation=werkhub-b21", wrap="sleep 3")
    bobs = dbd_cluster.submit(os_users["bob"], "--nodelist=node3", "--gres=gpu:2", wrap="sleep 2")
    for job_id in (mine, bobs):
        wait_job(dbd_client, job_id, lambda job: job.state == "COMPLETED")
    # the ledger's slot as accounting sees it: OS user, slot, GPUs per node
    slot = Slot(
        id=21,
        user="alice",
        gpu_type="a100",
        count=1,
        start=alice["start"],
        end=alice["end"],
        devices=("node1/0",),
        state=State.ACTIVE,
    )
    booked = spans([slot], users.mapper(MAPPING))
    assert booked == [accounting.Span(21, "wh-alice", slot.start, slot.end, (("node1", 1),))]
    deadline = time.monotonic() + 30
    while True:  # slurmdbd records a finished job a moment later
        runs = {r.id: r for r in usage.runs(alice["start"])}
        if {mine, bobs} <= set(runs) and all(runs[j].end for j in (mine, bobs)):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    assert runs[mine].gpus == 1 and runs[bobs].gpus == 2  # Slurm's own GPU TRES
    assert runs[mine].reservation == "werkhub-b21" and runs[mine].user == "wh-alice"
    (piece,) = accounting.attribute(runs.values(), booked, {}, ledger.utcnow())
    assert (piece.booking_id, piece.job_id, piece.gpus, piece.estimated) == (21, mine, 1, False)
    assert 2 <= piece.end - piece.start <= 5
    (util,) = accounting.utilisation(booked, [piece], ledger.utcnow())
    assert 0 < util.used_gpu_hours < util.booked_gpu_hours
    # sreport answers (whole hours after Slurm's hourly rollup: this hour is not in it yet)
    assert isinstance(usage.sreport(alice["start"]), list)
