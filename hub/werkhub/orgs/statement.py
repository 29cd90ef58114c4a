"""An organisation's statement for a period: GPU-hours booked, used and released per member
and per GPU type, the booked hours split into guaranteed and borrowed, endpoint hours, job
runs, and an amount where prices are configured.

Pure (standard library): the caller passes the ledger's rows. The figures are the ledger's
own sums, clipped to the period exactly as ``Accounting.usage`` clips them: booked is
start to the booked end, released is the end to the booked end (time given back early),
used is the usage segments (time a server or endpoint ran on the booking's devices).
Guaranteed plus borrowed is booked: a booking's booked hours count as borrowed when the
ledger marks it borrowed (beyond the organisation's guarantee when it was last written).
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

FIELDS = ("booked", "used", "released")
#: the booked hours, split by the bookings' ``borrowed`` flag
SPLIT = ("guaranteed", "borrowed")
ALL = FIELDS + SPLIT


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``2026-12`` -> [first day 00:00, next month's first day 00:00) in the site's zone."""
    try:
        year, number = (int(part) for part in month.split("-"))
        first = datetime(year, number, 1, tzinfo=tz)
    except ValueError:
        raise ValueError(f"'{month}' is no month: write YYYY-MM, e.g. 2026-12") from None
    days = calendar.monthrange(year, number)[1]
    return first, first + timedelta(days=days)


def clip(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


def compute(
    bookings: Iterable[Mapping[str, Any]],
    segments: Iterable[Mapping[str, Any]],
    runs: Iterable[Mapping[str, Any]],
    members: Iterable[str],
    lo: float,
    hi: float,
    now: float,
    prices: Mapping[str, float],
) -> dict[str, Any]:
    """``bookings``: id, user, gpu_type, count, kind, borrowed, start/end/booked_end
    (epoch seconds), not cancelled; ``segments``: booking_id, user, count, start, end (None: still
    open); ``runs``: owner, status. Only ``members``' rows count."""
    people = set(members)
    per_member: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(ALL, 0.0))
    per_type: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(ALL, 0.0))
    endpoint_seconds = 0.0
    type_of: dict[int, str] = {}
    for b in bookings:
        if b["user"] not in people:
            continue
        type_of[b["id"]] = b["gpu_type"]
        booked = b["count"] * clip(b["start"], b["booked_end"], lo, hi)
        released = b["count"] * clip(b["end"], b["booked_end"], lo, hi)
        share = "borrowed" if b.get("borrowed") else "guaranteed"
        for table, key in ((per_member, b["user"]), (per_type, b["gpu_type"])):
            table[key]["booked"] += booked
            table[key]["released"] += released
            table[key][share] += booked
        if b.get("kind") == "endpoint":
            endpoint_seconds += booked - released
    for seg in segments:
        if seg["user"] not in people:
            continue
        used = seg["count"] * clip(seg["start"], seg["end"] if seg["end"] else now, lo, hi)
        per_member[seg["user"]]["used"] += used
        gpu_type = type_of.get(seg["booking_id"])
        if gpu_type is not None:
            per_type[gpu_type]["used"] += used
    job_runs: dict[str, int] = defaultdict(int)
    for run in runs:
        if run["owner"] in people:
            job_runs[run["owner"]] += 1

    def hours(table: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        return {k: {f: round(v[f] / 3600, 4) for f in ALL} for k, v in sorted(table.items())}

    types = hours(per_type)
    for gpu_type, figures in types.items():
        price = prices.get(gpu_type)
        figures["amount"] = round(figures["booked"] * price, 2) if price is not None else None
    amounts = [f["amount"] for f in types.values() if f["amount"] is not None]
    return {
        "members": hours(per_member),
        "gpu_types": types,
        "totals": {f: round(sum(v[f] for v in per_member.values()) / 3600, 4) for f in ALL},
        "endpoint_hours": round(endpoint_seconds / 3600, 4),
        "job_runs": dict(sorted(job_runs.items())),
        "amount": round(sum(amounts), 2) if amounts else None,
    }


def csv_rows(statement: Mapping[str, Any]) -> list[list[str]]:
    """The statement as CSV rows: one per member, one per GPU type, the totals."""
    rows = [["section", "name", "booked_gpu_hours", "used_gpu_hours", "released_gpu_hours",
             "guaranteed_gpu_hours", "borrowed_gpu_hours", "job_runs", "amount"]]  # fmt: skip
    for name, f in statement["members"].items():
        runs = str(statement["job_runs"].get(name, 0))
        rows.append(["member", name, *(f"{f[k]:.4f}" for k in ALL), runs, ""])
    for name, f in statement["gpu_types"].items():
        amount = "" if f["amount"] is None else f"{f['amount']:.2f}"
        rows.append(["gpu_type", name, *(f"{f[k]:.4f}" for k in ALL), "", amount])
    total = statement["totals"]
    amount = "" if statement["amount"] is None else f"{statement['amount']:.2f}"
    runs = str(sum(statement["job_runs"].values()))
    rows.append(["total", "", *(f"{total[k]:.4f}" for k in ALL), runs, amount])
    return rows
