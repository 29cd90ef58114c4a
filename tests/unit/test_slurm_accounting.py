"""Slurm accounting (pure): ``sacct -c -P`` as Slurm 22.05 printed it from the jobcomp file,
``sacct -X -P`` and ``sreport -P reservation Utilization`` of slurmdbd, ``scontrol show
config``; runs attributed to bookings, the parts the ledger has not counted, utilisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from werkhub.slurm import accounting
from werkhub.slurm.accounting import JobRun, Span

T0 = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
#: printed by sacct -c -P -o JobID,User,... on the test cluster (a preempted job: two runs)
SACCT_C = """\
JobID|User|State|Start|End|NodeList|Partition|Reservation|JobName|AllocTRES
1|wh-bob(1002)|PREEMPTED|2026-12-07T04:00:00|2026-12-07T04:10:00|node3|gpu||wrap|
1|wh-bob(1002)|CANCELLED|2026-12-07T04:20:00|2026-12-07T04:20:00|(null)|gpu||wrap|
2|wh-alice(1001)|COMPLETED|2026-12-07T04:05:00|2026-12-07T04:35:00|node1|gpu|werkhub-b7|wrap|
3|root(0)|CANCELLED|2026-12-07T04:00:00|2026-12-07T05:00:00|node3|werkhub-hold||werkhub-h8-node3|
4|wh-alice(1001)|COMPLETED|2026-12-07T04:10:00|2026-12-07T04:40:00|node3|werkhub-b8||wrap|
4.batch|wh-alice(1001)|COMPLETED|2026-12-07T04:10:00|2026-12-07T04:40:00|node3|||batch|
"""
CONFIG = """\
Configuration data as of 2026-12-07T04:14:01
AccountingStorageTRES   = cpu,mem,energy,node,billing,fs/disk,vmem,pages
AccountingStorageType   = accounting_storage/none
JobCompLoc              = /tmp/werkhub-slurm-x/log/jobcomp.txt
JobCompType             = jobcomp/filetxt
"""
#: printed by sacct -a -X -P with slurmdbd on the test cluster (AllocTRES with GPUs)
SACCT_DBD = """\
JobID|User|State|Start|End|NodeList|Partition|Reservation|JobName|AllocTRES
1|wh-alice|COMPLETED|2026-12-07T04:18:29|2026-12-07T04:18:32|node1|gpu|werkhub-b5|wrap|\
billing=1,cpu=1,gres/gpu:a100=1,gres/gpu=1,mem=100M,node=1
"""
#: sreport's preamble, as printed, then the lines
SREPORT = """\
--------------------------------------------------------------------------------
Reservation Utilization 2026-12-07T03:00:00 - 2026-12-07T03:59:59
Usage reported in TRES Minutes
Cluster|Name|Start|End|TRES Name|Allocated|Idle
werkhubtest|werkhub-b7|2026-12-07T04:00:00|2026-12-07T05:00:00|gres/gpu|45|15
werkhubtest|maintenance|2026-12-07T04:00:00|2026-12-07T05:00:00|gres/gpu|0|60
"""


def test_sources_and_parsers() -> None:
    config = accounting.parse_config(CONFIG)
    assert config["JobCompType"] == "jobcomp/filetxt"
    assert accounting.source_of(config) == "jobcomp"
    dbd = {**config, "AccountingStorageType": "accounting_storage/slurmdbd"}
    assert accounting.source_of(dbd) == "slurmdbd"
    assert accounting.source_of({}) == "none"
    runs = accounting.parse_sacct(SACCT_C)
    assert [r.id for r in runs] == ["1", "1", "2", "3", "4"]  # steps left out
    first = runs[0]
    assert (first.user, first.state, first.nodes, first.gpus) == (
        "wh-bob",
        "PREEMPTED",
        ("node3",),
        None,
    )
    assert first.end == T0 + timedelta(minutes=10) and runs[2].reservation == "werkhub-b7"
    assert runs[1].nodes == ()
    (dbd,) = accounting.parse_sacct(SACCT_DBD)
    assert (dbd.id, dbd.user, dbd.gpus, dbd.reservation) == ("1", "wh-alice", 1, "werkhub-b5")
    assert accounting.tres_gpus("billing=1,cpu=1,gres/gpu:a100=1,gres/gpu=1,mem=100M") == 1
    assert accounting.tres_gpus("gres/gpu:a100=2,gres/gpu:v100=1") == 3
    assert accounting.tres_gpus("cpu=1,mem=100M") is None
    (resv, _) = accounting.parse_sreport(SREPORT)
    assert (resv.name, resv.tres, resv.allocated, resv.idle) == (
        "werkhub-b7",
        "gres/gpu",
        45.0,
        15.0,
    )
    assert accounting.parse_sacct("") == [] and accounting.parse_sreport("") == []


def spans() -> list[Span]:
    whole = Span(7, "wh-alice", T0, T0 + timedelta(minutes=30), (("node1", 1),))
    part = Span(8, "wh-alice", T0 + timedelta(minutes=15), T0 + timedelta(hours=1), (("node3", 1),))
    return [whole, part]


def test_runs_are_attributed_to_their_booking_within_its_slot() -> None:
    runs = accounting.parse_sacct(SACCT_C)
    now = T0 + timedelta(hours=1)
    pieces = accounting.attribute(runs, spans(), {"4": 1}, now)
    # bob's runs belong to no booking; the hold is not use; alice's job 2 counts to the
    # slot's end (04:30, not 04:35); job 4 from the partition's slot start, GPUs as seen
    assert [(p.booking_id, p.job_id, p.gpus, p.estimated) for p in pieces] == [
        (7, "2", 1, True),
        (8, "4", 1, False),
    ]
    assert pieces[0].end - pieces[0].start == 25 * 60
    assert pieces[1].start == (T0 + timedelta(minutes=15)).timestamp()
    # alice's job without reservation or partition on a node she booked belongs too
    plain = JobRun("9", "wh-alice", "RUNNING", T0, None, ("node1",), "gpu", "", "wrap", 1)
    (piece,) = accounting.attribute([plain], spans(), {}, T0 + timedelta(minutes=10))
    assert piece.booking_id == 7 and piece.end == (T0 + timedelta(minutes=10)).timestamp()
    (util, util8) = accounting.utilisation(spans(), pieces, now)
    assert util.booked_gpu_hours == 0.5 and round(util.used_gpu_hours, 4) == round(25 / 60, 4)
    assert round(util.idle_gpu_hours * 60) == 5 and util.estimated and util.jobs == ["2"]
    assert util8.as_dict()["utilisation"] == round(25 / 45, 4)


def test_only_what_the_ledger_has_not_counted_is_added() -> None:
    assert accounting.uncovered(0, 100, []) == [(0, 100)]
    assert accounting.uncovered(0, 100, [(20, 40), (60, 200)]) == [(0, 20), (40, 60)]
    assert accounting.uncovered(0, 100, [(-5, 100)]) == []
    assert accounting.uncovered(0, 100, [(0, 99.5)]) == []  # less than a second left
