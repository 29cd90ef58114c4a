"""The Slurm command line, run: ``scontrol`` and ``sbatch`` with ``SLURM_CONF`` from the
configuration, ``TZ=UTC``, a time limit per command, and retries while the controller
cannot be reached (a restart takes seconds).

Failures become :class:`werkhub.slurm.errors.SlurmError` subclasses carrying Slurm's own
words: an overlap is a ``SlurmConflict`` (409), an unknown partition a ``SlurmInvalid``
(422), an unreachable controller a ``SlurmUnavailable`` (503).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from werkhub.slurm import commands
from werkhub.slurm.commands import Job, Node, Partition, Reservation, ReservationSpec
from werkhub.slurm.errors import (
    SlurmConflict,
    SlurmError,
    SlurmUnavailable,
    classify,
    reason_of,
)

log = logging.getLogger(__name__)
#: failures where the request surely never reached the controller
_NOT_DELIVERED = re.compile(r"connect failure|Connection refused")

__all__ = ["Completed", "SlurmClient", "SlurmError"]


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


#: runs argv with env and a timeout in seconds (``subprocess.run`` by default)
Runner = Callable[[Sequence[str], Mapping[str, str], float], Completed]


def run_process(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> Completed:
    result = subprocess.run(
        list(argv),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Completed(result.returncode, result.stdout, result.stderr)


class SlurmClient:
    """One Slurm cluster, through its command line.

    ``conf``: the cluster's slurm.conf (empty: the client's own default, or ``SLURM_CONF``
    of werkhub's environment); ``timeout``: seconds one command may take;
    ``retry_seconds``: how long a command keeps being retried while the controller cannot
    be reached, before :class:`SlurmUnavailable`.
    """

    def __init__(
        self,
        conf: str = "",
        *,
        timeout: float = 10,
        retry_seconds: float = 30,
        runner: Runner = run_process,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conf = conf
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._runner = runner
        self._sleep = sleep
        self._clock = clock

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "TZ": "UTC"}
        if self.conf:
            env["SLURM_CONF"] = self.conf
        return env

    def run(self, argv: Sequence[str], what: str = "", *, idempotent: bool = True) -> str:
        """Run ``argv`` and return its standard output; retried while the controller is
        unreachable; a :class:`SlurmError` saying ``what`` failed, with Slurm's reason.

        A command that is not ``idempotent`` (``sbatch``) is retried only where it surely
        never reached the controller (a refused connection), never after a time-out."""
        what = what or " ".join(argv[:3])
        deadline = self._clock() + self.retry_seconds
        pause = 0.2
        while True:
            try:
                done = self._runner(argv, self.env, self.timeout)
            except FileNotFoundError:
                raise SlurmUnavailable(
                    f"cannot {what}: the Slurm client program '{argv[0]}' is not installed "
                    "on werkhub's machine (Debian: slurm-client)",
                    reason="not installed",
                ) from None
            except subprocess.TimeoutExpired:
                done = Completed(-1, "", f"Socket timed out: no answer in {self.timeout:g} s")
            if done.returncode == 0:
                return done.stdout
            reason = reason_of(done.stderr or done.stdout)
            kind, retry = classify(reason)
            retry = retry and (idempotent or _NOT_DELIVERED.search(reason) is not None)
            if retry and self._clock() + pause < deadline:
                log.info("slurm: %s: %s; trying again in %.1f s", what, reason, pause)
                self._sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            if retry:
                reason = f"{reason} (for {self.retry_seconds:g} s)"
            raise kind(f"Slurm refused to {what}: {reason}", reason=reason)

    def ping(self) -> bool:
        """Whether the controller answers now (no retries)."""
        try:
            done = self._runner(["scontrol", "ping"], self.env, self.timeout)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and " is UP" in done.stdout

    # -- reading -------------------------------------------------------------------------

    def nodes(self) -> list[Node]:
        return commands.parse_nodes(self.run(commands.show_argv("node"), "list its nodes"))

    def partitions(self) -> list[Partition]:
        text = self.run(commands.show_argv("partition"), "list its partitions")
        return commands.parse_partitions(text)

    def reservations(self) -> list[Reservation]:
        text = self.run(commands.show_argv("reservation"), "list its reservations")
        return commands.parse_reservations(text)

    def reservation(self, name: str) -> Reservation | None:
        return next((r for r in self.reservations() if r.name == name), None)

    def jobs(self) -> list[Job]:
        return commands.parse_jobs(self.run(commands.show_argv("job"), "list its jobs"))

    def job(self, job_id: str) -> Job | None:
        found = commands.parse_jobs(
            self.run(commands.show_argv("job", job_id), f"show job {job_id}")
        )
        return found[0] if found else None

    # -- writing -------------------------------------------------------------------------

    def create_reservation(self, spec: ReservationSpec, now: datetime) -> None:
        """Create ``spec``'s reservation. Slurm creates all of it or nothing; a reservation
        of that name that already holds the same nodes for the same user and end (a retry
        whose first answer was lost) counts as created."""
        what = f"reserve {', '.join(spec.nodes)} for {spec.user} as {spec.name}"
        try:
            self.run(commands.create_argv(spec, now), what)
        except SlurmConflict as exc:
            if "Duplicate reservation name" not in exc.reason:
                raise
            found = self.reservation(spec.name)
            same = (
                found is not None
                and set(found.nodes) == set(spec.nodes)
                and set(found.users) == {spec.user}
                and found.end == spec.end
            )
            if not same:
                raise

    def update_reservation(self, name: str, changes: Mapping[str, str]) -> None:
        said = ", ".join(f"{k}={v}" for k, v in changes.items())
        self.run(commands.update_argv(name, changes), f"change reservation {name} ({said})")

    def delete_reservation(self, name: str, missing_ok: bool = True) -> None:
        """Delete reservation ``name``; one that is gone already is fine unless
        ``missing_ok`` is False."""
        try:
            self.run(commands.delete_argv(name), f"delete reservation {name}")
        except SlurmError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    def submit(self, argv: Sequence[str]) -> str:
        """Run an ``sbatch --parsable`` argv (:func:`commands.sbatch_argv`); the job id."""
        out = self.run(argv, "accept the batch job", idempotent=False)
        return commands.parse_job_id(out)

    def cancel(self, job_id: str) -> None:
        self.run(["scancel", job_id], f"cancel job {job_id}")
