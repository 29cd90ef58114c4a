"""The Slurm command line as data: ``scontrol -o show ...`` lines parsed, and the argv of
the commands werkhub runs (reservations, batch jobs), built.

Times: werkhub runs every Slurm client with ``TZ=UTC`` (see :mod:`werkhub.slurm.cluster`),
so the times Slurm prints and parses here are UTC.

Pure: standard library and pydantic only; no process is started here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

#: werkhub's reservations, and only those, start with this; plan() touches nothing else
MANAGED_PREFIX = "werkhub-"
_BOOKING_NAME = re.compile(rf"^{MANAGED_PREFIX}b(\d+)$")
#: node states in which a node runs no new jobs
UNUSABLE_STATES = frozenset(
    {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "FUTURE", "INVALID_REG",
     "NOT_RESPONDING", "POWERED_DOWN", "POWERING_DOWN", "REBOOT_ISSUED", "UNKNOWN"}
)  # fmt: skip
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


def reservation_name(booking_id: int) -> str:
    """The name of the reservation that holds booking ``booking_id``."""
    return f"{MANAGED_PREFIX}b{booking_id}"


def booking_of(name: str) -> int | None:
    """The booking id in a reservation name werkhub made, else None."""
    found = _BOOKING_NAME.match(name)
    return int(found.group(1)) if found else None


# -- reading -----------------------------------------------------------------------------

#: a key starts a line or follows a blank; keys hold letters, digits and _ : / . (as in
#: ``CPUs/Task=1`` or ``ReqB:S:C:T=0:0:*:*``); a value runs to the next key and may hold
#: blanks (``OS=Linux 6.1 #1 SMP``, ``Reason=gres/gpu count reported lower ...``)
_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/.]*)=")


def parse_record(line: str) -> dict[str, str]:
    """One line of ``scontrol -o show ...`` as key/value pairs (the first of a repeated key)."""
    keys = list(_KEY.finditer(line))
    record: dict[str, str] = {}
    for here, after in zip(keys, [*keys[1:], None], strict=True):
        value = line[here.end() : after.start() if after else len(line)].strip()
        record.setdefault(here.group(1), value)
    return record


def parse_records(text: str) -> list[dict[str, str]]:
    """Every record of ``scontrol -o show ...`` output; lines that are not records
    (``No reservations in the system``) are left out."""
    return [parse_record(line) for line in text.splitlines() if _KEY.match(line.strip())]


def null(value: str | None) -> str:
    """Slurm's ``(null)``, ``N/A``, ``None`` and ``Unknown`` as an empty string."""
    return "" if value is None or value in ("(null)", "N/A", "None", "Unknown", "n/a") else value


def parse_time(value: str | None) -> datetime | None:
    """``2030-01-01T10:00:00`` (UTC) as an aware datetime; None for Slurm's empty values."""
    value = null(value)
    if not value:
        return None
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def format_time(moment: datetime) -> str:
    """An aware datetime as Slurm reads a time (UTC, to the second)."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host lists: ``node[1-3,7],gpu01`` -> node1 node2 node3 node7
    gpu01 (zero padding kept: ``n[01-02]`` -> n01 n02)."""
    hosts: list[str] = []
    for part in split_top(null(text)):
        found = re.fullmatch(r"([^\[]*)\[([^\]]+)\](.*)", part)
        if not found:
            hosts.append(part)
            continue
        head, ranges, tail = found.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            if not hi:
                hosts.extend(expand_hostlist(f"{head}{lo}{tail}"))
                continue
            width = len(lo)
            for n in range(int(lo), int(hi) + 1):
                hosts.extend(expand_hostlist(f"{head}{n:0{width}d}{tail}"))
    return hosts


class Gres(_Model):
    """One generic resource entry of a node: ``gpu:a100:2`` (type "" when untyped)."""

    name: str
    type: str
    count: int


def parse_gres(text: str) -> list[Gres]:
    """A node's ``Gres=`` value: ``gpu:a100:2``, ``gpu:2``, ``gpu:a100:2(S:0-1),gpu:v100:1``;
    ``(null)`` is none."""
    found = []
    for part in split_top(null(text)):
        part = re.sub(r"\(.*\)$", "", part)
        fields = part.split(":")
        if len(fields) == 1:
            found.append(Gres(name=fields[0], type="", count=1))
            continue
        count_text = fields[-1]
        count = _count(count_text)
        if count is None:  # gpu:a100 (no count) means one
            found.append(Gres(name=fields[0], type=":".join(fields[1:]), count=1))
        else:
            found.append(Gres(name=fields[0], type=":".join(fields[1:-1]), count=count))
    return found


def _count(text: str) -> int | None:
    found = re.fullmatch(r"(\d+)([KMG]?)", text)
    if not found:
        return None
    return int(found.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[found.group(2)]


class NodeState(_Model):
    """``IDLE+DRAIN``, ``DOWN*``, ``MIXED+RESERVED``: the base state, flags, usable or not."""

    base: str
    flags: tuple[str, ...]
    responding: bool

    @property
    def usable(self) -> bool:
        return self.responding and not ({self.base, *self.flags} & UNUSABLE_STATES)

    @property
    def text(self) -> str:
        return "+".join([self.base, *self.flags]) + ("" if self.responding else "*")


def parse_state(text: str) -> NodeState:
    text = null(text) or "UNKNOWN"
    responding = not text.endswith("*")
    base, *flags = text.rstrip("*~#!%$@^-").split("+")
    return NodeState(
        base=base.upper(), flags=tuple(f.upper() for f in flags), responding=responding
    )


class Node(_Model):
    """A node as ``scontrol -o show node`` describes it."""

    name: str
    state: NodeState
    gres: tuple[Gres, ...]
    partitions: tuple[str, ...]
    reason: str = ""

    @property
    def gpus(self) -> tuple[Gres, ...]:
        return tuple(g for g in self.gres if g.name == "gpu")


def parse_nodes(text: str) -> list[Node]:
    return [
        Node(
            name=r["NodeName"],
            state=parse_state(r.get("State", "")),
            gres=tuple(parse_gres(r.get("Gres", ""))),
            partitions=tuple(split_top(null(r.get("Partitions", "")))),
            reason=null(r.get("Reason", "")),
        )
        for r in parse_records(text)
        if "NodeName" in r
    ]


class Partition(_Model):
    name: str
    nodes: tuple[str, ...]
    default: bool
    up: bool


def parse_partitions(text: str) -> list[Partition]:
    return [
        Partition(
            name=r["PartitionName"],
            nodes=tuple(expand_hostlist(r.get("Nodes", ""))),
            default=r.get("Default") == "YES",
            up=r.get("State") == "UP",
        )
        for r in parse_records(text)
        if "PartitionName" in r
    ]


class Reservation(_Model):
    """A reservation as ``scontrol -o show reservation`` describes it."""

    name: str
    start: datetime | None
    end: datetime | None
    nodes: tuple[str, ...]
    users: tuple[str, ...]
    partition: str
    flags: tuple[str, ...]
    state: str

    @property
    def managed(self) -> bool:
        return self.name.startswith(MANAGED_PREFIX)


def parse_reservations(text: str) -> list[Reservation]:
    return [
        Reservation(
            name=r["ReservationName"],
            start=parse_time(r.get("StartTime")),
            end=parse_time(r.get("EndTime")),
            nodes=tuple(expand_hostlist(r.get("Nodes", ""))),
            users=tuple(split_top(null(r.get("Users", "")))),
            partition=null(r.get("PartitionName", "")),
            flags=tuple(split_top(null(r.get("Flags", "")))),
            state=r.get("State", ""),
        )
        for r in parse_records(text)
        if "ReservationName" in r
    ]


class Job(_Model):
    """A job as ``scontrol -o show job`` describes it."""

    id: str
    user: str
    state: str
    reason: str
    nodes: tuple[str, ...]
    reservation: str
    partition: str
    start: datetime | None


def parse_jobs(text: str) -> list[Job]:
    return [
        Job(
            id=r["JobId"],
            user=r.get("UserId", "").split("(")[0],
            state=r.get("JobState", ""),
            reason=null(r.get("Reason", "")),
            nodes=tuple(expand_hostlist(r.get("NodeList", ""))),
            reservation=null(r.get("Reservation", "")),
            partition=null(r.get("Partition", "")),
            start=parse_time(r.get("StartTime")),
        )
        for r in parse_records(text)
        if "JobId" in r
    ]


# -- writing -----------------------------------------------------------------------------


class ReservationSpec(_Model):
    """What Slurm should hold for one booking: whole ``nodes`` for OS ``user`` in
    [start, end)."""

    name: str
    booking_id: int
    hub_user: str
    user: str
    nodes: tuple[str, ...]
    start: datetime
    end: datetime
    partition: str = ""


def show_argv(kind: str, name: str = "") -> list[str]:
    """``scontrol -o show node|partition|reservation|job [name]``."""
    return ["scontrol", "-o", "show", kind, *([name] if name else [])]


def create_argv(spec: ReservationSpec, now: datetime) -> list[str]:
    """``scontrol create reservation`` for ``spec``: a start at or before ``now`` is
    ``now`` (Slurm refuses starts in the past)."""
    start = "now" if spec.start <= now else format_time(spec.start)
    return [
        "scontrol",
        "create",
        "reservation",
        f"ReservationName={spec.name}",
        f"StartTime={start}",
        f"EndTime={format_time(spec.end)}",
        f"Users={spec.user}",
        f"Nodes={','.join(spec.nodes)}",
        *([f"PartitionName={spec.partition}"] if spec.partition else []),
    ]


def update_argv(name: str, changes: Mapping[str, str]) -> list[str]:
    """``scontrol update ReservationName=NAME Key=Value ...``."""
    return [
        "scontrol",
        "update",
        f"ReservationName={name}",
        *(f"{k}={v}" for k, v in changes.items()),
    ]


def delete_argv(name: str) -> list[str]:
    return ["scontrol", "delete", f"ReservationName={name}"]


def sbatch_argv(
    *,
    user: str,
    partition: str,
    gpus: int,
    minutes: int,
    workdir: str,
    wrap: str = "",
    script: str = "",
    reservation: str = "",
    job_name: str = "",
    output: str = "",
    extra: Sequence[str] = (),
) -> list[str]:
    """``sbatch --parsable`` of a job of OS ``user`` (root submits it on their behalf with
    ``--uid``/``--gid``) that needs ``gpus`` GPUs for at most ``minutes``; either ``wrap``
    (a command line) or ``script`` (a path) runs. A time limit is always set: a job without
    one would wait for every reservation ahead on its nodes."""
    if bool(wrap) == bool(script):
        raise ValueError("give exactly one of wrap and script")
    argv = [
        "sbatch",
        "--parsable",
        f"--uid={user}",
        f"--gid={user}",
        f"--chdir={workdir}",
        f"--time={minutes}",
        *([f"--partition={partition}"] if partition else []),
        *([f"--gres=gpu:{gpus}"] if gpus else []),
        *([f"--reservation={reservation}"] if reservation else []),
        *([f"--job-name={job_name}"] if job_name else []),
        *([f"--output={output}"] if output else []),
        *extra,
    ]
    return [*argv, f"--wrap={wrap}"] if wrap else [*argv, script]


def parse_job_id(output: str) -> str:
    """The job id ``sbatch --parsable`` prints (``42`` or ``42;cluster``)."""
    text = output.strip().splitlines()[-1] if output.strip() else ""
    job_id = text.split(";")[0]
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {output.strip()!r}")
    return job_id
