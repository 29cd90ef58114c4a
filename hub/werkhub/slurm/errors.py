"""Errors of the Slurm backend, and which of them Slurm's own messages are.

``classify`` maps a message of the Slurm command line (``scontrol``, ``sbatch``) to an
error class and whether trying again may help (the controller restarting). Pure: standard
library and :mod:`werkhub.errors` only.
"""

from __future__ import annotations

import re

from werkhub.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable, WerkhubError

__all__ = [
    "NoOsAccount",
    "SlurmConflict",
    "SlurmError",
    "SlurmInvalid",
    "SlurmNotFound",
    "SlurmUnavailable",
    "classify",
    "reason_of",
]


class SlurmError(WerkhubError):
    """Slurm refused or failed something werkhub asked of it; ``reason`` is Slurm's own
    words (``Requested reservation overlaps with another reservation``)."""

    status = 502
    reason: str = ""

    def __init__(self, message: str, reason: str = "", field: str | None = None) -> None:
        super().__init__(message, field)
        self.reason = reason


class SlurmConflict(SlurmError, Conflict):
    """The request collides with what Slurm holds: an overlapping reservation (one made
    outside werkhub too), busy nodes, a name in use."""

    status = 409


class SlurmInvalid(SlurmError, Invalid):
    """Slurm does not know something the request names: a partition, node, user, time."""

    status = 422


class SlurmNotFound(SlurmError, NotFound):
    """Slurm has no such reservation or job (any more)."""

    status = 404


class SlurmUnavailable(SlurmError, Unavailable):
    """The Slurm controller cannot be reached (after retries), the client programs are
    missing, or the nodes asked for are down."""

    status = 503


class NoOsAccount(SlurmError, Forbidden):
    """A hub user has no operating-system account to run Slurm jobs as."""

    status = 403


#: (pattern of Slurm's message, error class, worth retrying), first match wins
_RULES: tuple[tuple[str, type[SlurmError], bool], ...] = (
    # the controller is down or restarting; "Unexpected message received" is what
    # `scontrol create reservation` says then (verified with 22.05)
    (r"Unable to contact slurm controller", SlurmUnavailable, True),
    (r"connect failure|Connection refused", SlurmUnavailable, True),
    (r"Socket timed out|Zero Bytes were transmitted", SlurmUnavailable, True),
    (r"Unexpected message received", SlurmUnavailable, True),
    (r"backup controller in standby", SlurmUnavailable, True),
    (r"overlaps with another reservation", SlurmConflict, False),
    (r"Requested nodes are busy|Nodes busy", SlurmConflict, False),
    (r"Duplicate reservation name", SlurmConflict, False),
    (r"Reservation already started", SlurmConflict, False),
    (r"Access denied to requested reservation", SlurmConflict, False),
    (
        r"Requested reservation is invalid|Invalid job id|Reservation .* not found",
        SlurmNotFound,
        False,
    ),
    (
        r"node not available|down, drained|Node .* is down|nodes? (are|is) down",
        SlurmUnavailable,
        False,
    ),
    (r"Invalid|invalid|Unknown parameter|not available|not supported", SlurmInvalid, False),
)


def classify(message: str) -> tuple[type[SlurmError], bool]:
    """The error class for Slurm's ``message`` and whether retrying may help."""
    for pattern, kind, retry in _RULES:
        if re.search(pattern, message):
            return kind, retry
    return SlurmError, False


_PREFIXES = re.compile(
    r"^(?:\w+: )?(?:error: )?(?:slurm_\w+ error: |Batch job submission failed: |"
    r"Error (?:creating|updating|deleting) the reservation: |"
    r"delete_reservation ReservationName=\S+: )?"
)


def reason_of(output: str) -> str:
    """Slurm's reason in the (stderr) ``output`` of a failed command: its first line
    without the program's prefixes (``scontrol: error:``, ``Error creating the
    reservation:``); the text as it came where it has no such shape."""
    for line in output.splitlines():
        line = line.strip()
        if line:
            return _PREFIXES.sub("", line, count=1).strip() or line
    return "no message"
