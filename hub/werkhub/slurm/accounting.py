"""Slurm's accounting as werkhub's GPU time used (pure: output parsed, jobs attributed to
bookings, utilisation computed; docs/slurm.md, "Accounting").

Two sources, by what the site runs:

* **slurmdbd** (``AccountingStorageType=accounting_storage/slurmdbd``): ``sacct -X -P``
  with each job's allocated TRES, ``gres/gpu`` included, and ``sreport reservation
  Utilization`` for reservations (whole hours, after Slurm's hourly rollup). Not
  ``sacct --json``: Slurm 22.05 prints its ``user`` as null and the reservation's name as a
  number there (measured), while ``-P`` prints both, and the same TRES;
* **without it**: ``sacct -c`` reads the jobcomp/filetxt file (``JobCompType``). It has no
  GPU TRES: a job's GPUs come from its gres request as ``scontrol -o show job`` showed it
  while it was known to the controller (``TresPerNode``); a job never seen so is counted
  with its booking's GPUs on its node, and marked estimated. ``sreport`` needs slurmdbd:
  utilisation is then computed from the jobs here, the same way.

A job belongs to a booking when it ran in the booking's reservation or partition
(``werkhub-b<id>``), else when its user is the booking's OS user and it ran on a node the
booking holds during the slot. Hold jobs (``werkhub-h*``) are not use. Only the part of a job
within the slot counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from werkhub.slurm import commands

Source = Literal["slurmdbd", "jobcomp", "none"]
#: the fields asked of ``sacct -P`` (slurmdbd, and jobcomp with ``-c``), in this order
SACCT_FIELDS = (
    "JobID",
    "User",
    "State",
    "Start",
    "End",
    "NodeList",
    "Partition",
    "Reservation",
    "JobName",
    "AllocTRES",
)


@dataclass(frozen=True)
class JobRun:
    """One run of a job (a requeued job has several), as accounting recorded it."""

    id: str
    user: str
    state: str
    start: datetime | None
    end: datetime | None
    nodes: tuple[str, ...]
    partition: str
    reservation: str
    name: str
    #: GPUs allocated per accounting (slurmdbd), else None
    gpus: int | None


# -- reading -------------------------------------------------------------------------------


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as key -> value."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def source_of(config: Mapping[str, str]) -> Source:
    """Where this cluster keeps accounting: slurmdbd, the jobcomp file, or nowhere."""
    if config.get("AccountingStorageType", "").endswith("slurmdbd"):
        return "slurmdbd"
    if config.get("JobCompType", "").endswith("filetxt"):
        return "jobcomp"
    return "none"


def tres_gpus(text: str) -> int | None:
    """GPUs in a TRES string (``billing=1,cpu=1,gres/gpu:a100=1,gres/gpu=1``): the untyped
    ``gres/gpu`` count, else the typed ones summed; None when it names no GPU."""
    plain, typed = None, 0
    found = False
    for part in commands.split_top(commands.null(text)):
        key, _, value = part.partition("=")
        if not value.isdigit():
            continue
        if key == "gres/gpu":
            plain = int(value)
        elif key.startswith("gres/gpu:"):
            typed += int(value)
            found = True
    if plain is not None:
        return plain
    return typed if found else None


def parse_sacct(text: str) -> list[JobRun]:
    """``sacct -P -o <SACCT_FIELDS>`` (header included): one run per line; job steps
    (``12.batch``) are left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("|")
    out = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("|"), strict=False))
        job_id = row.get("JobID", "")
        if not job_id or "." in job_id:
            continue
        out.append(
            JobRun(
                id=job_id,
                user=row.get("User", "").split("(")[0],
                state=row.get("State", "").split(" ")[0],
                start=commands.parse_time(row.get("Start")),
                end=commands.parse_time(row.get("End")),
                nodes=tuple(commands.expand_hostlist(row.get("NodeList", ""))),
                partition=commands.null(row.get("Partition", "")),
                reservation=commands.null(row.get("Reservation", "")),
                name=row.get("JobName", ""),
                gpus=tres_gpus(row.get("AllocTRES", "")),
            )
        )
    return out


@dataclass(frozen=True)
class ReservationUse:
    """A line of ``sreport -P reservation Utilization``: TRES minutes used and idle."""

    name: str
    tres: str
    allocated: float
    idle: float


def parse_sreport(text: str) -> list[ReservationUse]:
    """``sreport -P reservation Utilization --tres=gres/gpu`` (header included)."""
    lines = [line for line in text.splitlines() if "|" in line]
    if not lines:
        return []
    header = [h.strip() for h in lines[0].split("|")]
    out = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("|"), strict=False))

        def number(key: str, row: dict[str, str] = row) -> float:
            value = row.get(key, "0").split("(")[0].strip() or "0"
            return float(value) if value.replace(".", "", 1).isdigit() else 0.0

        out.append(
            ReservationUse(
                name=row.get("Name", ""),
                tres=row.get("TRES Name", ""),
                allocated=number("Allocated"),
                idle=number("Idle"),
            )
        )
    return out


# -- attributing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A booking as accounting needs it: its OS user, slot and GPUs per node."""

    id: int
    user: str
    start: datetime
    end: datetime
    gpus: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        return commands.reservation_name(self.id)

    @property
    def count(self) -> int:
        return sum(n for _, n in self.gpus)


@dataclass(frozen=True)
class Piece:
    """The part of one job run within one booking's slot."""

    booking_id: int
    job_id: str
    start: float
    end: float
    gpus: int
    estimated: bool

    @property
    def gpu_seconds(self) -> float:
        return max(0.0, self.end - self.start) * self.gpus


def _belongs(run: JobRun, span: Span) -> bool:
    if span.name in (run.reservation, run.partition):
        return True
    booked = {node for node, _ in span.gpus}
    return run.user == span.user and bool(booked & set(run.nodes))


def attribute(
    runs: Iterable[JobRun], spans: Sequence[Span], seen_gpus: Mapping[str, int], now: datetime
) -> list[Piece]:
    """Each run's part within the slot of the booking it belongs to (a reservation or
    partition match first, else the first booking of its user on its nodes it overlaps).
    GPUs: accounting's, else ``seen_gpus`` (from the controller while the job was known),
    else the booking's GPUs on the run's nodes (estimated). A run still going counts to
    ``now``."""
    out = []
    for run in runs:
        if run.start is None or run.name.startswith("werkhub-h"):
            continue
        end = run.end or now
        matches = [s for s in spans if _belongs(run, s) and run.start < s.end and end > s.start]
        named = [s for s in matches if s.name in (run.reservation, run.partition)]
        if not matches:
            continue
        span = (named or matches)[0]
        gpus, estimated = run.gpus, False
        if gpus is None:
            gpus = seen_gpus.get(run.id)
        if gpus is None:
            gpus = sum(n for node, n in span.gpus if node in run.nodes)
            estimated = True
        if gpus <= 0:
            continue
        lo, hi = max(run.start, span.start), min(end, span.end)
        if hi > lo:
            out.append(Piece(span.id, run.id, lo.timestamp(), hi.timestamp(), gpus, estimated))
    return out


def uncovered(
    start: float, end: float, covered: Iterable[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The parts of [start, end) that no interval of ``covered`` covers."""
    gaps = [(start, end)]
    for lo, hi in sorted(covered):
        nxt = []
        for a, b in gaps:
            if hi <= a or lo >= b:
                nxt.append((a, b))
                continue
            if lo > a:
                nxt.append((a, lo))
            if hi < b:
                nxt.append((hi, b))
        gaps = nxt
    return [(a, b) for a, b in gaps if b - a >= 1]


@dataclass
class Utilisation:
    """One booking's GPU time: booked so far, used per Slurm, and the rest idle."""

    booking_id: int
    booked_gpu_hours: float
    used_gpu_hours: float
    estimated: bool = False
    jobs: list[str] = field(default_factory=list)

    @property
    def idle_gpu_hours(self) -> float:
        return max(0.0, self.booked_gpu_hours - self.used_gpu_hours)

    @property
    def ratio(self) -> float | None:
        return self.used_gpu_hours / self.booked_gpu_hours if self.booked_gpu_hours else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "booking_id": self.booking_id,
            "booked_gpu_hours": round(self.booked_gpu_hours, 4),
            "used_gpu_hours": round(self.used_gpu_hours, 4),
            "idle_gpu_hours": round(self.idle_gpu_hours, 4),
            "utilisation": None if self.ratio is None else round(self.ratio, 4),
            "estimated": self.estimated,
            "jobs": self.jobs,
        }


def utilisation(spans: Iterable[Span], pieces: Iterable[Piece], now: datetime) -> list[Utilisation]:
    """Per booking, its slot up to ``now``: GPU-hours booked, used by Slurm jobs (pieces
    overlapping one another on the same booking are counted once per GPU, up to the
    booking's GPUs), and idle; like ``sreport reservation Utilization``, for partitions too."""
    by_booking: dict[int, list[Piece]] = {}
    for piece in pieces:
        by_booking.setdefault(piece.booking_id, []).append(piece)
    out = []
    for span in spans:
        until = min(span.end, now)
        booked = max(0.0, (until - span.start).total_seconds()) * span.count / 3600
        mine = by_booking.get(span.id, [])
        used = min(sum(p.gpu_seconds for p in mine) / 3600, booked)
        out.append(
            Utilisation(
                span.id,
                booked,
                used,
                any(p.estimated for p in mine),
                sorted({p.job_id for p in mine}),
            )
        )
    return out
