"""bench/trace.py's replay engine (bench/tracesim) on small synthetic traces written in the
Alibaba v2023 trace's CSV format: werkhub's ledger accounts for every booked GPU-minute
(booked = used + idle + released, to the minute), and hand-made cases come out exactly
as werkhub's rules say (no-show freed after the grace, idle server released after the
idle window, a waitlisted request served when that frees its GPU)."""

from __future__ import annotations

import csv
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from tracesim.assumptions import Assumptions  # noqa: E402
from tracesim.fcfs import fcfs  # noqa: E402
from tracesim.metrics import Figures, fcfs_figures, ledger_figures  # noqa: E402
from tracesim.replay import NO_RELEASE, WERKHUB, Mode, Outcome, replay, to_min_epoch  # noqa: E402
from tracesim.trace import read_trace  # noqa: E402
from tracesim.workload import Request, Workload, build_workload  # noqa: E402

from werkhub.booking.tables import audit, bookings, usage  # noqa: E402
from werkhub.db import upgrade  # noqa: E402

TASK_HEADER = [
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
]


def write_trace(folder: Path, nodes: list[tuple[str, int, str]], tasks: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "nodes.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["sn", "cpu_milli", "memory_mib", "gpu", "model"])
        out.writerows([name, 64000, 262144, gpus, model] for name, gpus, model in nodes)
    with (folder / "pods.csv").open("w", newline="") as handle:
        out = csv.DictWriter(handle, TASK_HEADER)
        out.writeheader()
        for i, task in enumerate(tasks):
            row = {"name": f"pod-{i:04d}", "cpu_milli": 4000, "memory_mib": 8192, "qos": "LS"}
            row |= {"gpu_spec": "", "pod_phase": "Running", "gpu_milli": 1000, **task}
            out.writerow(row)
    return folder


def task(gpus: int, created_min: int, run_min: int, spec: str = "", milli: int = 1000) -> dict:
    return {
        "num_gpu": gpus,
        "gpu_milli": milli if gpus else 0,
        "gpu_spec": spec,
        "creation_time": created_min * 60,
        "scheduled_time": created_min * 60,
        "deletion_time": (created_min + run_min) * 60,
    }


BASE_ASSUMPTIONS = Assumptions(tasks_file="pods.csv", nodes_file="nodes.csv", window="all")


def run(workload: Workload, a: Assumptions, mode: Mode, url: str) -> tuple[Outcome, Figures]:
    upgrade(url)
    outcome = replay(workload, a, mode, url)
    figures = ledger_figures(outcome)
    return outcome, figures


def states(outcome: Outcome) -> dict[str, tuple]:
    """user -> (state, start, end, booked end, created_by), minutes since trace start."""
    epoch = to_min_epoch()
    with outcome.manager.read() as conn:
        return {
            r.user: (
                r.state,
                r.start_min - epoch,
                r.end_min - epoch,
                r.booked_end_min - epoch,
                r.created_by,
            )
            for r in conn.execute(select(bookings))
        }


def dispose(outcome: Outcome) -> None:
    outcome.manager.writer.dispose()
    outcome.manager.reader.dispose()


# ---- a hand-made case -------------------------------------------------------------------


@pytest.fixture
def hand_made(tmp_path: Path) -> tuple[Workload, Assumptions]:
    """A: one node with one GPU; B: one node with four.

    pod-0000 (A) runs 0-10 and leaves its server up idle; pod-0001 (B) runs 0-25 and
    releases; pod-0002 (A) wants to start at 20 for 30 minutes and accepts up to 30 minutes
    later; a person books 2 x B at 5 and never comes. Every booking is the run time
    rounded up to the hour, made at the desired start. Also: a CPU-only and a never
    scheduled task (both skipped)."""
    tasks = [task(1, 0, 10, "A"), task(1, 0, 25, "B"), task(1, 20, 30, "A"), task(0, 1, 5)]
    pending = task(1, 2, 3, "A") | {"scheduled_time": "", "pod_phase": "Pending"}
    folder = write_trace(tmp_path / "hand", [("a0", 1, "A"), ("b0", 4, "B")], [*tasks, pending])
    a = replace(
        BASE_ASSUMPTIONS,
        on_demand_share=1.0,
        overestimate_mean=0.0,
        no_show_share=0.0,
        release_share=0.0,
        max_wait_hours=0.5,
    )
    workload = build_workload(read_trace(folder, a.tasks_file, a.nodes_file), a)
    assert workload.counts["skipped: CPU-only task (num_gpu 0)"] == 1
    assert workload.counts["skipped: never scheduled in the trace (Pending)"] == 1
    reqs = workload.requests
    assert [(r.gpu_type, r.desired, r.run, r.booked) for r in reqs] == [
        ("A", 0, 10, 60),
        ("B", 0, 25, 60),
        ("A", 20, 30, 60),
    ]
    reqs[1] = replace(reqs[1], releases=True)
    reqs[2] = replace(reqs[2], releases=True)
    reqs.append(Request("ghost", "B", 2, 0.0, 5, 5, 0, 60, releases=False, phantom=True))
    return workload, a


def test_hand_made_case_with_werkhub_mechanisms(
    db_url: str, hand_made: tuple[Workload, Assumptions]
) -> None:
    workload, a = hand_made
    outcome, f = run(workload, a, WERKHUB, db_url)
    try:
        assert states(outcome) == {
            # idle from 10 (task end): released after idle_minutes (30), at 40
            "pod-0000": ("released", 0, 40, 60, "pod-0000"),
            # released by its person at the task's end
            "pod-0001": ("released", 0, 25, 60, "pod-0001"),
            # 409 at 20 -> waitlist; granted when pod-0000's GPU was released at 40
            "pod-0002": ("released", 40, 70, 100, "waitlist"),
            # no server 15 minutes after its start: freed at 20, where it now ends
            "ghost": ("no_show", 5, 20, 65, "ghost"),
        }
        with outcome.manager.read() as conn:
            trail = {
                (r.booking_id, r.action): r.at / 60 - to_min_epoch()
                for r in conn.execute(select(audit))
            }
            segments = sorted(
                (r.user, r.start / 60 - to_min_epoch(), r.end / 60 - to_min_epoch())
                for r in conn.execute(select(usage))
            )
        ids = {p.req.user: p.booking for p in outcome.people}
        assert trail[(ids["ghost"], "no_show")] == 20
        assert trail[(ids["pod-0000"], "idle_release")] == 40
        # servers: pod-0000 up 0-40 (10 busy, 30 idle), pod-0001 0-25, pod-0002 40-70
        assert segments == [("pod-0000", 0, 40), ("pod-0001", 0, 25), ("pod-0002", 40, 70)]
        assert (f.booked, f.used, f.released, f.idle) == (300, 65, 175, 60)
        assert f.identity_gap == 0 and f.server_gap == 0
        assert f.waits == [0, 0, 20] and f.from_waitlist == 1 and f.refused == 0
        assert abs(f.usage_report_gap_h or 0) < 1e-3
    finally:
        dispose(outcome)


def test_hand_made_case_without_release_and_fcfs(
    tmp_path: Path, hand_made: tuple[Workload, Assumptions]
) -> None:
    workload, a = hand_made
    outcome, f = run(workload, a, NO_RELEASE, f"sqlite:///{tmp_path / 'none.sqlite'}")
    try:
        assert states(outcome) == {
            "pod-0000": ("ended", 0, 60, 60, "pod-0000"),
            "pod-0001": ("ended", 0, 60, 60, "pod-0001"),
            # a no-show holds its booking to the end
            "ghost": ("no_show", 5, 65, 65, "ghost"),
        }
        # pod-0002's GPU stays held until 60, after its latest start (50): refused
        assert f.refused == 1 and f.waits == [0, 0]
        assert (f.booked, f.used, f.released, f.idle) == (240, 35, 0, 205)
        assert f.identity_gap == 0 and f.server_gap == 0
    finally:
        dispose(outcome)
    queue = fcfs_figures(fcfs(workload), workload, 0.0)
    assert queue.waits == [0, 0, 0] and queue.used == 65 and queue.requests == 3


# ---- a random synthetic trace -----------------------------------------------------------


def random_trace(folder: Path, n: int = 36, seed: int = 7) -> Path:
    """``n`` tasks over six hours on 9 GPUs of three models: queues, multi-GPU tasks,
    fractional ones, long and short runs."""
    rng = random.Random(seed)
    tasks = []
    for _ in range(n):
        gpus = rng.choice([1, 1, 1, 1, 2, 2, 4])
        milli = rng.choice([1000, 1000, 300, 500]) if gpus == 1 else 1000
        run_min = rng.choice([2, 7, 20, 45, 90, 200])
        tasks.append(task(gpus, rng.randrange(0, 360), run_min, milli=milli))
    tasks.sort(key=lambda t: t["creation_time"])
    nodes = [("t0", 2, "T4"), ("t1", 2, "T4"), ("v0", 4, "V100"), ("p0", 1, "P100")]
    return write_trace(folder, nodes, tasks)


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Workload, Assumptions]:
    folder = random_trace(tmp_path / "random")
    a = replace(
        BASE_ASSUMPTIONS,
        seed=11,
        no_show_share=0.3,
        release_share=0.5,
        lead_mean_minutes=30.0,
        max_wait_hours=3.0,
    )
    return build_workload(read_trace(folder, a.tasks_file, a.nodes_file), a), a


def test_random_trace_accounts_for_every_minute(
    db_url: str, synthetic: tuple[Workload, Assumptions]
) -> None:
    workload, a = synthetic
    assert len(workload.real) == 36 and len(workload.requests) > 40
    got: dict[str, Figures] = {}
    for mode in (WERKHUB, NO_RELEASE):
        outcome, f = run(workload, a, mode, db_url)
        dispose(outcome)
        got[mode.name] = f
        assert f.identity_gap == 0, mode
        assert f.server_gap == 0, mode
        assert abs(f.usage_report_gap_h or 0) < 1e-3 * len(workload.requests)
        assert f.served + f.refused == 36
        assert f.booked is not None and f.booked > 0 and len(f.waits) == f.served
        if mode is NO_RELEASE:
            assert f.released == 0
        # the DB is reused for the next mode: empty it
        upgrade(db_url)
        _empty(db_url)
    mine, none = got[WERKHUB.name], got[NO_RELEASE.name]
    # the contention is real: people waited and the waitlist served some of them
    assert mine.from_waitlist > 0 and max(mine.waits) > 0
    assert (mine.released or 0) > 0 and (mine.idle_share or 1) < (none.idle_share or 0)


def _empty(url: str) -> None:
    from sqlalchemy import create_engine, delete

    from werkhub.booking.tables import metadata

    engine = create_engine(url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))
    engine.dispose()


def test_sparse_idle_checks_match_the_dense_detector(
    tmp_path: Path, synthetic: tuple[Workload, Assumptions]
) -> None:
    """The replay runs the idle detector only when a booking may have become idle; run
    over every active booking at every minute it must decide exactly the same."""
    workload, a = synthetic
    seen = []
    for dense in (False, True):
        mode = replace(WERKHUB, dense_idle=dense)
        outcome, f = run(workload, a, mode, f"sqlite:///{tmp_path / f'{dense}.sqlite'}")
        seen.append((states(outcome), f.waits, f.released, f.identity_gap))
        with outcome.manager.read() as conn:
            idle_releases = conn.execute(
                select(audit.c.booking_id).where(audit.c.action == "idle_release")
            ).all()
        assert idle_releases, "the idle detector released nothing"
        dispose(outcome)
    assert seen[0] == seen[1]


def test_fcfs_baselines_strict_and_backfilling() -> None:
    """Two GPUs on one node: a 2-GPU task waits for a 1-GPU task; strict FCFS holds a later
    1-GPU task behind it, backfilling starts that one at once."""
    from werkhub.booking.ledger import Unit

    units = tuple(Unit(id=f"n/{i}", node="n", gpu_type="A", index=i) for i in range(2))
    reqs = [
        Request("one", "A", 1, 1.0, 0, 0, 100, 120, releases=True),
        Request("two", "A", 2, 1.0, 10, 10, 50, 60, releases=True),
        Request("late", "A", 1, 0.5, 20, 20, 10, 60, releases=True),
        Request("ghost", "A", 1, 0.0, 0, 0, 0, 60, releases=False, phantom=True),
    ]
    workload = Workload(units=units, requests=reqs, start=0, end=200)
    strict, backfill = fcfs(workload), fcfs(workload, backfill=True)
    # strict: two starts at 100 (one ends), late after two at 150
    assert strict.waits == [0, 90, 130] and strict.last_end == 160
    # backfill: late runs 20-30 beside one; two still starts at 100
    assert backfill.waits == [0, 0, 90] and backfill.last_end == 150
    assert strict.used == backfill.used == 100 + 2 * 50 + 10
    assert backfill.busy == 100 + 2 * 50 + 5
