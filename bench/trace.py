"""Replay of Alibaba's GPU cluster trace v2023 through werkhub's booking ledger.

Takes the trace's folder (``openb_node_list_gpu_node.csv`` and a task list such as
``openb_pod_list_default.csv``; read in place, never copied) and replays every GPU task as
a person's booking through werkhub's real ledger, quota, no-show, idle-release and
waitlist code (``BookingManager`` on a fresh SQLite database, or PostgreSQL with
``--db-url``), with a simulated clock (the ``werkhub.booking.ledger.utcnow`` seam; no
sleeping), on the trace's node inventory. Three policy sets, in the same run:

1. werkhub: release at task end (a share of people), the idle detector releases the rest,
   no-shows are freed after the grace period, 409s join the waitlist;
2. bookings with none of these release mechanisms (held to their booked end);
3. first-come first-served with no bookings (a queue-only scheduler), strict (a task that
   does not fit holds back those behind it) and, for reference, with backfilling (any later
   task that fits starts).

Every modelling assumption is an option with a documented default (``--help``), and all of
them are printed with the results (see ``bench/tracesim/``). Goals (issue 14): booked
GPU-minutes left idle <= 10% with werkhub's mechanisms, wait p95 <= 1.2 x FCFS, the full
trace in under 10 minutes.

Data: Alibaba cluster-trace-gpu-v2023 (https://github.com/alibaba/clusterdata), for
research and study use, as published with: Qizhen Weng, Lingyun Yang, Yinghao Yu, Wei Wang,
Xiaochuan Tang, Guodong Yang, Liping Zhang. "Beware of Fragmentation: Scheduling
GPU-Sharing Workloads with Fragmentation Gradient Descent". 2023 USENIX Annual Technical
Conference (USENIX ATC '23). https://www.usenix.org/conference/atc23/presentation/weng

    python bench/trace.py ../shared/data/alibaba-gpu-v2023 [--quick] [--profile] [options]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tracesim import CITATION
from tracesim.assumptions import Assumptions, add_arguments, describe, from_args
from tracesim.fcfs import fcfs
from tracesim.metrics import Figures, fcfs_figures, ledger_figures, table
from tracesim.replay import NO_RELEASE, WERKHUB, Mode, fresh_database, replay
from tracesim.trace import read_trace
from tracesim.workload import Workload, build_workload

IDLE_GOAL = 0.10
WAIT_GOAL = 1.2
TIME_GOAL_S = 600
QUICK_LIMIT = 500


def run_ledger(
    workload: Workload, a: Assumptions, mode: Mode, db_url: str | None, profile: bool
) -> Figures:
    with fresh_database(db_url) as url:
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        outcome = replay(workload, a, mode, url)
        if profiler:
            profiler.disable()
            print(f"\nprofile of the '{mode.name}' replay (top 25 by cumulative time):")
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
            print(text.getvalue())
        figures = ledger_figures(outcome)
        outcome.manager.writer.dispose()
        outcome.manager.reader.dispose()
    return figures


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "n/a (0 min)" if a == 0 else "inf"
    return f"{a / b:.2f}x"


def goals(
    werkhub: Figures, no_release: Figures, queue: Figures, backfill: Figures, wall_s: float
) -> list[str]:
    idle = werkhub.idle_share or 0.0
    base = no_release.idle_share or 0.0
    wait_ok = werkhub.p95 <= WAIT_GOAL * queue.p95
    return [
        f"  idle share with werkhub's mechanisms: {100 * idle:.1f}% (goal <= "
        f"{100 * IDLE_GOAL:.0f}%; without release: {100 * base:.1f}%) -> "
        + ("met" if idle <= IDLE_GOAL else f"MISSED by {100 * (idle - IDLE_GOAL):.1f} points"),
        f"  wait p95: werkhub {werkhub.p95:.0f} min, FCFS {queue.p95:.0f} min, ratio "
        f"{_ratio(werkhub.p95, queue.p95)} (goal <= {WAIT_GOAL}x) -> "
        + ("met" if wait_ok else "MISSED")
        + f"; against FCFS with backfilling ({backfill.p95:.0f} min): "
        f"{_ratio(werkhub.p95, backfill.p95)}",
        f"  refused by werkhub (not served within max_wait_hours): {werkhub.refused:,} of "
        f"{werkhub.requests:,}; their waits are not in the percentiles (FCFS serves all)",
        f"  wall time {wall_s:.0f} s (goal < {TIME_GOAL_S} s) -> "
        + ("met" if wall_s < TIME_GOAL_S else "MISSED"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="the trace folder (alibaba-gpu-v2023)")
    parser.add_argument("--quick", action="store_true", help=f"--limit {QUICK_LIMIT}")
    parser.add_argument(
        "--db-url",
        help="database for the ledger replays (default: a fresh SQLite file per set in "
        "/dev/shm); a PostgreSQL database's public schema is DROPPED and made anew",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the werkhub replay")
    add_arguments(parser)
    args = parser.parse_args(argv)
    overrides = {"limit": QUICK_LIMIT} if args.quick and not args.limit else {}
    a = from_args(args, **overrides)
    began = time.perf_counter()

    print("werkhub booking replay of Alibaba GPU cluster trace v2023 (bench/trace.py)")
    print(f"data: {CITATION}\n")
    trace = read_trace(args.folder, a.tasks_file, a.nodes_file)
    workload = build_workload(trace, a)
    print(f"trace: {args.folder} ({len(trace.tasks):,} tasks, {len(trace.nodes):,} GPU nodes, ")
    print(f"       {trace.gpus:,} GPUs; replayed inventory: {len(workload.units):,} GPUs)")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in workload.capacity().items()))
    print("workload:")
    for key, value in workload.counts.items():
        print(f"  {key:<58} {value:>9,}")
    print("assumptions (options of the same name):")
    print("\n".join(describe(a)))
    print(
        "  fixed: each task is its own person (one server per user); a person starts the "
        "server at the booking's start; fractional tasks book one whole GPU and use "
        "gpu_milli/1000 of it; a task's GPUs read gpu_milli/10 % while it runs, 0 after"
    )
    sys.stdout.flush()

    queues = []
    for backfill, name in ((False, "FCFS, no bookings"), (True, "FCFS + backfill")):
        t0 = time.perf_counter()
        out = fcfs(workload, backfill=backfill)
        queues.append(fcfs_figures(out, workload, time.perf_counter() - t0, name))
    results = [run_ledger(workload, a, WERKHUB, args.db_url, args.profile)]
    results.append(run_ledger(workload, a, NO_RELEASE, args.db_url, False))
    results.extend(queues)
    wall_s = time.perf_counter() - began

    print("\nresults per policy set (GPU-h = GPU-hours):")
    print("\n".join(table(results, workload)))
    print("\ngoals:")
    print("\n".join(goals(*results, wall_s)))
    for f in results[:2]:
        s = f.stats
        print(
            f"  '{f.name}': {s['event_minutes']:,.0f} event minutes, {s['ticks']:,.0f} ticks, "
            f"{s['idle_checks']:,.0f} idle checks, {s['samples']:,.0f} samples"
        )
    print(f"\nrun time {wall_s:.1f} s. Data: {CITATION}")
    broken = [f.name for f in results[:2] if f.identity_gap or f.server_gap]
    if broken:
        print(f"ACCOUNTING MISMATCH in {', '.join(broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
