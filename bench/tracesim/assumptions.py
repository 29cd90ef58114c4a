"""Every modelling assumption of the replay, with its default and why.

Each field is a command-line option of ``bench/trace.py`` (``--lead-mean-minutes`` for
``lead_mean_minutes``) and is printed with the results (``describe``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from typing import Any


def _opt(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Assumptions:
    # ---- what is replayed --------------------------------------------------------------
    tasks_file: str = _opt("openb_pod_list_default.csv", "task list in the trace folder")
    nodes_file: str = _opt("openb_node_list_gpu_node.csv", "node list in the trace folder")
    window: str = _opt(
        "observed",
        "observed: replay from the trace's first deletion (day 115.3 in the default file; "
        "the README: 99.6%% of tasks are created after it), tasks created earlier enter "
        "then with the run time they had left; all: from time 0",
    )
    limit: int = _opt(0, "replay only the first N GPU tasks (0: all)")
    node_share: float = _opt(
        1.0,
        "share of each GPU model's nodes kept (1: the trace's inventory; less to study "
        "contention; at least one node per model)",
    )
    seed: int = _opt(2023, "seed of every random draw (types, lead times, factors, people)")
    # ---- how people book ---------------------------------------------------------------
    on_demand_share: float = _opt(
        0.3, "share of people who book on demand, at the moment they want to start"
    )
    lead_mean_minutes: float = _opt(
        60.0,
        "the others book ahead: lead time exponential with this mean (minutes), "
        "at most max_advance_days",
    )
    overestimate_mean: float = _opt(
        0.5,
        "booked length = run time x (1 + E), E exponential with this mean (median factor "
        "1.35, p90 2.15), then rounded up to round_minutes",
    )
    round_minutes: int = _opt(60, "bookings are rounded up to this many minutes (the hour)")
    no_show_share: float = _opt(
        0.1,
        "extra bookings by people who never come, as a share of tasks: each is drawn with "
        "a task and copies its type, GPU count, desired start and booked length (never "
        "run, so FCFS has no counterpart)",
    )
    release_share: float = _opt(
        0.5,
        "share of people who release their booking when their task ends; the others leave "
        "the server up and idle (werkhub's idle detector, or the booking's end, frees it)",
    )
    max_wait_hours: float = _opt(
        24.0,
        "a refused (409) request joins the waitlist and accepts a start up to this late; "
        "an entry not served by then is a refused request",
    )
    # ---- werkhub's settings ------------------------------------------------------------
    no_show_minutes: int = _opt(15, "werkhub: grace before a booking without a server is freed")
    idle_minutes: int = _opt(30, "werkhub: quiet minutes before an idle booking is released")
    idle_threshold: float = _opt(5.0, "werkhub: utilisation percent below which a GPU is quiet")
    sample_minutes: int = _opt(
        1,
        "simulated sampler period in whole minutes (werkhub samples every tick, 30 s by "
        "default; the replay runs on the ledger's minute)",
    )
    max_booking_hours: float = _opt(
        744.0,
        "policy's longest booking (744 h = the ledger's 31-day cap); longer tasks are cut "
        "to it in every policy set (counted)",
    )
    max_advance_days: float = _opt(14.0, "policy: how far ahead a booking may start")
    gpu_hours_per_week: float = _opt(
        1344.0, "policy: weekly GPU-hour quota (8 GPUs all week: never binds for one task)"
    )
    max_concurrent_gpus: int = _opt(8, "policy: GPUs held at once (the largest task's count)")

    @property
    def grace(self) -> int:
        return self.no_show_minutes

    @property
    def cap_minutes(self) -> int:
        return int(self.max_booking_hours * 60)

    def check(self) -> None:
        shares = ("node_share", "on_demand_share", "no_show_share", "release_share")
        for name in shares:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], not {value}")
        if self.node_share <= 0:
            raise ValueError("node_share must be above 0")
        if self.window not in ("observed", "all"):
            raise ValueError("window is 'observed' or 'all'")
        if self.round_minutes < 1 or self.sample_minutes < 1:
            raise ValueError("round_minutes and sample_minutes are whole minutes, at least 1")
        if self.max_booking_hours * 60 < self.round_minutes:
            raise ValueError("max_booking_hours must hold at least one rounding step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per assumption, its default shown in ``--help``."""
    for f in fields(Assumptions):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        parser.add_argument(
            flag, type=kind, default=f.default, help=f"{f.metadata['help']} (default: {f.default})"
        )


def from_args(args: argparse.Namespace, **overrides: Any) -> Assumptions:
    values = {f.name: getattr(args, f.name) for f in fields(Assumptions) if hasattr(args, f.name)}
    chosen = replace(Assumptions(**values), **overrides)
    chosen.check()
    return chosen


def describe(chosen: Assumptions) -> list[str]:
    """``name = value`` per assumption, marking those that differ from the default."""
    lines = []
    for f in fields(Assumptions):
        value = getattr(chosen, f.name)
        mark = "" if value == f.default else f"   (default {f.default})"
        lines.append(f"  {f.name:<20} = {value}{mark}")
    return lines
