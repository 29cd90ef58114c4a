"""Slurm's accounting merged into the ledger's GPU time used (docs/slurm.md, "Accounting").

Each reconciliation round (:class:`werkhub.service.slurm_sync.SlurmSync`) asks Slurm which
jobs ran (``sacct -X -P`` with slurmdbd, ``sacct -c`` on the jobcomp file without it),
attributes them to the bookings of the last :data:`LOOKBACK` (:mod:`werkhub.slurm.accounting`)
and writes the GPU time of finished runs that the ledger has not counted yet as usage
segments of their booking (the parts of a run that no segment of the booking covers, so a
round run twice counts nothing twice, and a hub server already counted is not counted
again). The ledger's usage report (booked = used + released + idle) then includes work done
through Slurm. The utilisation per booking, Slurm's (``sreport reservation Utilization``
where slurmdbd runs) and werkhub's own figures side by side, goes to the status.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from werkhub.booking import ledger, reads, rows
from werkhub.booking.ledger import Slot, State
from werkhub.booking.manager import BookingManager
from werkhub.booking.tables import bookings, usage
from werkhub.config.schema import SlurmSection
from werkhub.errors import WerkhubError
from werkhub.slurm import accounting, commands, preempt, users
from werkhub.slurm.accounting import JobRun, Span
from werkhub.slurm.cluster import SlurmClient

log = logging.getLogger("werkhub.service.slurm")
#: bookings whose slot ended longer ago than this are no longer looked at
LOOKBACK = timedelta(days=2)
#: what each source can and cannot tell
NOTES = {
    "slurmdbd": (
        "slurmdbd: sacct -X -P (GPU TRES per job) and sreport reservation Utilization "
        "(whole hours, after Slurm's hourly rollup)"
    ),
    "jobcomp": (
        "sacct -c on the jobcomp file: no slurmdbd, so no GPU TRES; a job's GPUs are its gres "
        "request as the controller showed it, else its booking's GPUs on its node "
        "(estimated); no sreport (it needs slurmdbd): utilisation computed from the jobs"
    ),
    "none": (
        "Slurm keeps no accounting (AccountingStorageType none, no JobCompType=jobcomp/"
        "filetxt): only werkhub's own figures"
    ),
}


def spans(found: list[Slot], user_map: Any) -> list[Span]:
    out = []
    for slot in found:
        try:
            os_user = user_map(slot.user)
        except WerkhubError:
            continue
        per_node = Counter(unit.split("/", 1)[0] for unit in slot.devices)
        out.append(Span(slot.id, os_user, slot.start, slot.end, tuple(sorted(per_node.items()))))
    return out


class SlurmUsage:
    """Accounting of one cluster; :meth:`round` once per reconciliation."""

    def __init__(self, section: SlurmSection, client: SlurmClient) -> None:
        self.section = section
        self.client = client
        self.source: accounting.Source | None = None
        #: job id -> GPUs per its gres request, from the controller while it knew the job
        self.seen_gpus: dict[str, int] = {}
        self.merged_gpu_hours = 0.0
        self.last: dict[str, Any] = {}
        self.error = ""

    def detect(self) -> accounting.Source:
        text = self.client.run(["scontrol", "show", "config"], "show its configuration")
        self.source = accounting.source_of(accounting.parse_config(text))
        return self.source

    def runs(self, since: datetime) -> list[JobRun]:
        window = ["-S", commands.format_time(since), "-E", "now"]
        fields = ["-a", "-P", "-o", ",".join(accounting.SACCT_FIELDS), *window]
        if self.source == "slurmdbd":
            argv = ["sacct", "-X", *fields]
        elif self.source == "jobcomp":
            argv = ["sacct", "-c", *fields]
        else:
            return []
        return accounting.parse_sacct(self.client.run(argv, "list its jobs"))

    def sreport(self, since: datetime) -> list[dict[str, Any]]:
        if self.source != "slurmdbd":
            return []
        argv = [
            "sreport",
            "-P",
            "reservation",
            "Utilization",
            f"start={commands.format_time(since)}",
            "end=now",
            "--tres=gres/gpu",
        ]
        found = accounting.parse_sreport(self.client.run(argv, "report reservations"))
        return [vars(r) for r in found if r.name.startswith(commands.MANAGED_PREFIX)]

    def round(self, manager: BookingManager) -> dict[str, Any]:
        """Read Slurm's accounting, merge finished runs into the ledger, keep the figures."""
        now = ledger.utcnow()
        try:
            if self.source is None:
                self.detect()
            for job in preempt.jobs(self.client):
                if job.gpus:
                    self.seen_gpus[job.id] = job.gpus
            with manager.read() as conn:
                found = reads.slots(
                    conn,
                    bookings.c.state != State.CANCELLED.value,
                    bookings.c.start_min <= rows.to_min(now),
                    bookings.c.end_min > rows.to_min(now - LOOKBACK),
                )
            booked = spans(found, users.mapper(self.section.user_mapping))
            since = min((s.start for s in booked), default=now)
            runs = self.runs(since) if booked else []
            pieces = accounting.attribute(runs, booked, self.seen_gpus, now)
            finished = {r.id for r in runs if r.end is not None}
            added = self.merge(manager, found, [p for p in pieces if p.job_id in finished])
            self.merged_gpu_hours += added
            ledger_used = self.ledger_used(manager, [s.id for s in booked], now)
            figures = []
            for util in accounting.utilisation(booked, pieces, now):
                row = util.as_dict()
                own = ledger_used.get(util.booking_id, 0.0)
                row["werkhub_used_gpu_hours"] = round(own, 4)
                row["werkhub_idle_gpu_hours"] = round(max(0.0, util.booked_gpu_hours - own), 4)
                figures.append(row)
            self.last = {
                "at": now.isoformat(),
                "source": self.source,
                "note": NOTES[self.source or "none"],
                "bookings": figures,
                "sreport": self.sreport(since) if booked else [],
                "merged_gpu_hours": round(self.merged_gpu_hours, 4),
            }
            self.error = ""
            if added:
                log.info("slurm: %.4f GPU-hours of Slurm jobs added to the ledger's usage", added)
        except WerkhubError as exc:
            self.error = str(exc)
            log.warning("slurm: accounting not read: %s", exc)
        return self.status()

    def merge(self, manager: BookingManager, found: list[Slot], pieces: list[Any]) -> float:
        """Write the parts of ``pieces`` no usage segment of their booking covers; the
        GPU-hours written."""
        if not pieces:
            return 0.0
        owners = {s.id: s.user for s in found}
        added = 0.0
        with manager.write() as conn:
            covered: dict[int, list[tuple[float, float]]] = defaultdict(list)
            ids = sorted({p.booking_id for p in pieces})
            now = ledger.now_ts()
            for seg in conn.execute(select(usage).where(usage.c.booking_id.in_(ids))).mappings():
                covered[seg["booking_id"]].append(
                    (seg["start"], seg["end"] if seg["end"] is not None else now)
                )
            for piece in sorted(pieces, key=lambda p: (p.booking_id, p.start)):
                for lo, hi in accounting.uncovered(
                    piece.start, piece.end, covered[piece.booking_id]
                ):
                    conn.execute(
                        insert(usage).values(
                            booking_id=piece.booking_id,
                            user=owners[piece.booking_id],
                            count=piece.gpus,
                            start=lo,
                            end=hi,
                        )
                    )
                    covered[piece.booking_id].append((lo, hi))
                    added += (hi - lo) * piece.gpus / 3600
        return added

    @staticmethod
    def ledger_used(manager: BookingManager, ids: list[int], now: datetime) -> dict[int, float]:
        """GPU-hours the ledger counts as used per booking (usage segments, to ``now``)."""
        out: dict[int, float] = defaultdict(float)
        if not ids:
            return out
        stamp = now.timestamp()
        with manager.read() as conn:
            for seg in conn.execute(select(usage).where(usage.c.booking_id.in_(ids))).mappings():
                end = seg["end"] if seg["end"] is not None else stamp
                out[seg["booking_id"]] += seg["count"] * max(0.0, end - seg["start"]) / 3600
        return out

    def status(self) -> dict[str, Any]:
        return {**self.last, "error": self.error, "source": self.source}
