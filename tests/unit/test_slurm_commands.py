"""The Slurm backend's pure parts: ``scontrol -o`` lines parsed (lines as Slurm 22.05 prints
them), argv built, errors classified, hub users mapped, the inventory and the reservation
plan derived from bookings; the client's retries with a scripted runner."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from werkhub.config.schema import SlurmGpuType, SlurmUserMapping, WerkhubConfig
from werkhub.errors import Invalid
from werkhub.slurm import commands, errors, inventory, reservations, users
from werkhub.slurm.cluster import Completed, SlurmClient
from werkhub.slurm.commands import Reservation, ReservationSpec

NODE = (
    "NodeName=node3 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=4.40 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:a100:2 NodeAddr=127.0.0.1 "
    "NodeHostName=localhost Port=50069 Version=22.05.8 OS=Linux 6.18.44-fc-v1300 #1 SMP "
    "PREEMPT_DYNAMIC @0  RealMemory=2000 AllocMem=0 FreeMem=15731 Sockets=2 Boards=1 "
    "State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=gpu  "
    "BootTime=2026-12-06T18:27:17 CfgTRES=cpu=2,mem=2000M,billing=2 AllocTRES= CapWatts=n/a"
)
DOWN_NODE = (
    "NodeName=node2 CoresPerSocket=1 Gres=gpu:a100:1 State=DOWN* Partitions=gpu,debug "
    "CfgTRES=cpu=2 Reason=test reason [root@2026-12-07T01:03:00]"
)
RESERVATION = (
    "ReservationName=werkhub-b7 StartTime=2029-01-01T10:00:00 EndTime=2029-01-01T11:00:00 "
    "Duration=01:00:00 Nodes=node[1-2] NodeCnt=2 CoreCnt=4 Features=(null) PartitionName=gpu "
    "Flags=SPEC_NODES TRES=cpu=4 Users=wh-alice Groups=(null) Accounts=(null) "
    "Licenses=(null) State=INACTIVE BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)"
)
JOB = (
    "JobId=12 JobName=wrap UserId=wh-alice(1001) GroupId=wh-alice(1001) MCS_label=N/A "
    "Priority=1 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=ReqNodeNotAvail,"
    "_May_be_reserved_for_other_job Dependency=(null) StartTime=Unknown Partition=gpu "
    "AllocNode:Sid=localhost:3407 ReqNodeList=(null) NodeList= NumNodes=1 CPUs/Task=1 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Reservation=werkhub-b7 "
    "Command=(null) WorkDir=/tmp/jobs TresPerNode=gres:gpu:1 "
)
PARTITION = (
    "PartitionName=gpu AllowGroups=ALL Default=YES QoS=N/A Nodes=node[1-3] State=UP "
    "TotalCPUs=6 TotalNodes=3 TRES=cpu=6,mem=6000M,node=3,billing=6"
)
T0 = datetime(2029, 1, 1, 10, tzinfo=UTC)


def test_records_keep_values_with_blanks_and_equals() -> None:
    record = commands.parse_record(NODE)
    assert record["NodeName"] == "node3"
    assert record["OS"] == "Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0"
    assert record["CfgTRES"] == "cpu=2,mem=2000M,billing=2"
    assert record["AllocTRES"] == ""
    job = commands.parse_record(JOB)
    assert job["CPUs/Task"] == "1" and job["ReqB:S:C:T"] == "0:0:*:*"
    assert commands.parse_records("No reservations in the system\n") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu:a100:2", [("gpu", "a100", 2)]),
        ("gpu:2", [("gpu", "", 2)]),
        ("gpu:a100:2(S:0-1),gpu:v100:1", [("gpu", "a100", 2), ("gpu", "v100", 1)]),
        ("gpu:a100:1(IDX:0)", [("gpu", "a100", 1)]),
        ("gpu,mps:100", [("gpu", "", 1), ("mps", "", 100)]),
        ("(null)", []),
    ],
)
def test_gres(text: str, expected: list[tuple[str, str, int]]) -> None:
    assert [(g.name, g.type, g.count) for g in commands.parse_gres(text)] == expected


def test_hostlists() -> None:
    assert commands.expand_hostlist("node[1-3,7],gpu01") == [
        "node1",
        "node2",
        "node3",
        "node7",
        "gpu01",
    ]
    assert commands.expand_hostlist("n[08-10]") == ["n08", "n09", "n10"]
    assert commands.expand_hostlist("(null)") == []


def test_nodes_and_their_states() -> None:
    idle, down = commands.parse_nodes(f"{NODE}\n{DOWN_NODE}\n")
    assert idle.name == "node3" and idle.state.usable and idle.state.text == "IDLE"
    assert [(g.type, g.count) for g in idle.gpus] == [("a100", 2)]
    assert idle.partitions == ("gpu",)
    assert not down.state.usable and down.state.text == "DOWN*"
    assert down.partitions == ("gpu", "debug")
    assert down.reason == "test reason [root@2026-12-07T01:03:00]"
    assert not commands.parse_state("IDLE+DRAIN").usable
    assert commands.parse_state("MIXED+RESERVED").usable


def test_reservations_jobs_partitions() -> None:
    (resv,) = commands.parse_reservations(RESERVATION)
    assert resv.managed and resv.nodes == ("node1", "node2") and resv.users == ("wh-alice",)
    assert resv.start == T0 and resv.end == T0 + timedelta(hours=1)
    assert resv.partition == "gpu" and resv.state == "INACTIVE"
    (job,) = commands.parse_jobs(JOB)
    assert job.id == "12" and job.user == "wh-alice" and job.state == "PENDING"
    assert job.nodes == () and job.reservation == "werkhub-b7" and job.start is None
    (part,) = commands.parse_partitions(PARTITION)
    assert part.default and part.up and part.nodes == ("node1", "node2", "node3")


def test_names() -> None:
    assert commands.reservation_name(42) == "werkhub-b42"
    assert commands.booking_of("werkhub-b42") == 42
    assert commands.booking_of("maintenance") is None


def spec(**over: Any) -> ReservationSpec:
    values: dict[str, Any] = {
        "name": "werkhub-b7",
        "booking_id": 7,
        "hub_user": "alice",
        "user": "wh-alice",
        "nodes": ("node1",),
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "partition": "gpu",
    }
    return ReservationSpec(**{**values, **over})


def test_argv() -> None:
    assert commands.create_argv(spec(), T0 - timedelta(hours=1)) == [
        "scontrol",
        "create",
        "reservation",
        "ReservationName=werkhub-b7",
        "StartTime=2029-01-01T10:00:00",
        "EndTime=2029-01-01T11:00:00",
        "Users=wh-alice",
        "Nodes=node1",
        "PartitionName=gpu",
    ]
    assert "StartTime=now" in commands.create_argv(spec(), T0 + timedelta(minutes=5))
    assert commands.update_argv("werkhub-b7", {"EndTime": "x"}) == [
        "scontrol",
        "update",
        "ReservationName=werkhub-b7",
        "EndTime=x",
    ]
    assert commands.delete_argv("werkhub-b7") == [
        "scontrol",
        "delete",
        "ReservationName=werkhub-b7",
    ]
    argv = commands.sbatch_argv(
        user="wh-alice", partition="gpu", gpus=1, minutes=5, workdir="/w", wrap="true",
        reservation="werkhub-b7",
    )  # fmt: skip
    assert argv[:2] == ["sbatch", "--parsable"] and "--uid=wh-alice" in argv
    assert "--reservation=werkhub-b7" in argv and "--time=5" in argv and argv[-1] == "--wrap=true"
    with pytest.raises(ValueError):
        commands.sbatch_argv(user="u", partition="", gpus=0, minutes=1, workdir="/")
    assert commands.parse_job_id("42;werkhubtest\n") == "42"


@pytest.mark.parametrize(
    ("stderr", "kind", "retry", "reason"),
    [
        (
            "Error creating the reservation: Requested reservation overlaps with another "
            "reservation\n",
            errors.SlurmConflict,
            False,
            "Requested reservation overlaps with another reservation",
        ),
        (
            " Error creating the reservation: Invalid partition name specified\n",
            errors.SlurmInvalid,
            False,
            "Invalid partition name specified",
        ),
        (
            "delete_reservation ReservationName=x: Requested reservation is invalid\n",
            errors.SlurmNotFound,
            False,
            "Requested reservation is invalid",
        ),
        (
            "slurm_load_reservations error: Unable to contact slurm controller (connect failure)\n",
            errors.SlurmUnavailable,
            True,
            "Unable to contact slurm controller (connect failure)",
        ),
        (
            "sbatch: error: Batch job submission failed: Access denied to requested reservation\n",
            errors.SlurmConflict,
            False,
            "Access denied to requested reservation",
        ),
        ("something new\n", errors.SlurmError, False, "something new"),
    ],
)
def test_errors_are_classified(stderr: str, kind: type, retry: bool, reason: str) -> None:
    assert errors.reason_of(stderr) == reason
    assert errors.classify(reason) == (kind, retry)
    assert kind(reason).status in (409, 422, 404, 503, 502)


def test_error_statuses() -> None:
    assert errors.SlurmConflict("x").status == 409
    assert errors.SlurmUnavailable("x").status == 503
    assert errors.SlurmInvalid("x").status == 422
    assert errors.NoOsAccount("x").status == 403
    assert isinstance(errors.SlurmConflict("x"), errors.SlurmError)


def test_user_mapping() -> None:
    same = SlurmUserMapping()
    prefix = SlurmUserMapping(mode="prefix", prefix="wh-", map={"carol": "csmith"})
    only = SlurmUserMapping(mode="map", map={"alice": "asmith"})
    assert users.os_name("alice", same) == "alice"
    assert users.os_name("alice", prefix) == "wh-alice"
    assert users.os_name("carol", prefix) == "csmith"
    assert users.os_name("alice", only) == "asmith"
    with pytest.raises(errors.NoOsAccount, match=r"hub user 'bob'.*map has no entry"):
        users.os_name("bob", only)
    with pytest.raises(Invalid, match="cannot be an OS user name"):
        users.os_name("9lives", same)
    with pytest.raises(errors.NoOsAccount, match="hub user 'bob' has no OS account 'wh-bob'"):
        users.ensure("bob", prefix, known=lambda name: False)
    assert users.ensure("root", same) == "root"


def test_user_creation_runs_useradd() -> None:
    made: set[str] = set()
    calls = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        made.add(argv[-1])
        return subprocess.CompletedProcess(argv, 0, "", "")

    mapping = SlurmUserMapping(mode="prefix")
    assert users.ensure("bob", mapping, create=True, known=made.__contains__, run=run) == "wh-bob"
    assert calls == [["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", "wh-bob"]]

    def refuse(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "useradd: Permission denied.")

    with pytest.raises(errors.SlurmError, match=r"could not create OS user 'wh-eve'.*Permission"):
        users.ensure("eve", mapping, create=True, known=lambda n: False, run=refuse)


def test_schema_section() -> None:
    cfg = WerkhubConfig.model_validate(
        {"slurm": {"conf": "/etc/slurm/slurm.conf", "partition": "gpu",
                   "user_mapping": {"mode": "prefix", "prefix": "wh-"}}}
    )  # fmt: skip
    assert cfg.slurm.user_mapping.mode == "prefix" and cfg.slurm.reconcile_seconds == 60
    for bad in ({"conf": "slurm.conf"}, {"user_mapping": {"map": {"a": "Not Valid"}}}):
        with pytest.raises(ValueError):
            WerkhubConfig.model_validate({"slurm": bad})


def cluster_inventory() -> inventory.SlurmInventory:
    nodes = commands.parse_nodes(
        "NodeName=node1 Gres=gpu:a100:1 State=IDLE Partitions=gpu\n"
        "NodeName=node2 Gres=gpu:a100:1 State=DOWN* Partitions=gpu Reason=broken\n"
        "NodeName=node3 Gres=gpu:a100:2 State=MIXED Partitions=gpu\n"
        "NodeName=cpu1 Gres=(null) State=IDLE Partitions=gpu\n"
        "NodeName=other Gres=gpu:v100:1 State=IDLE Partitions=debug\n"
    )
    (part,) = commands.parse_partitions(
        "PartitionName=gpu Default=YES Nodes=node[1-3],cpu1 State=UP"
    )
    return inventory.from_nodes(
        nodes, part, {"a100": SlurmGpuType(model="A100-80GB", memory_gb=80)}
    )


def test_inventory_from_nodes() -> None:
    inv = cluster_inventory()
    assert [n.name for n in inv.nodes] == ["node1", "node2", "node3"]
    assert [(d.index, d.model, d.memory_gb) for d in inv.nodes[2].devices] == [
        (0, "A100-80GB", 80),
        (1, "A100-80GB", 80),
    ]
    assert inv.unusable() == {"node2": "DOWN* (broken)"}
    assert reservations.node_units(inv)["node3"] == {"node3/0", "node3/1"}
    assert not inv.section().simulated
    parts = commands.parse_partitions(f"{PARTITION}\nPartitionName=debug Nodes=x State=UP")
    assert inventory.choose_partition(parts, "").name == "gpu"
    assert inventory.choose_partition(parts, "debug").name == "debug"
    with pytest.raises(errors.SlurmInvalid, match="no partition 'nope' \\(it has: gpu, debug\\)"):
        inventory.choose_partition(parts, "nope")


def booking(booking_id: int, user: str, devices: Sequence[str], **over: Any) -> dict[str, Any]:
    return {
        "id": booking_id,
        "user": user,
        "gpu_type": "A100-80GB",
        "count": len(devices),
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "state": "booked",
        "devices": list(devices),
        **over,
    }


def test_desired_holds_whole_nodes_and_parts_of_nodes_apart() -> None:
    prefixed = users.mapper(SlurmUserMapping(mode="prefix"))

    def mapping(hub_user: str) -> str:  # zed has no account
        return prefixed(hub_user) if hub_user != "zed" else users.os_name(hub_user, only_alice)

    only_alice = SlurmUserMapping(mode="map", map={"alice": "asmith"})
    wanted = reservations.desired(
        [
            booking(1, "alice", ["node1/0"]),
            booking(2, "bob", ["node3/0"]),  # half of node3
            booking(3, "carol", ["node3/0", "node3/1", "node2/0"], state="active"),
            booking(4, "dave", ["node1/0"], state="cancelled"),
            booking(
                5, "erin", ["node1/0"], start=T0 - timedelta(hours=2), end=T0 - timedelta(hours=1)
            ),
            booking(6, "frank", ["demo/0"]),
            booking(7, "zed", ["node2/0"]),
            booking(8, "gina", [], start=T0.isoformat(), end=(T0 + timedelta(hours=1)).isoformat()),
        ],
        cluster_inventory(),
        mapping,
        now=T0 - timedelta(minutes=30),
        partition="gpu",
    )
    assert sorted(wanted.specs) == ["werkhub-b1", "werkhub-b3"]
    assert wanted.specs["werkhub-b1"].user == "wh-alice"
    assert wanted.specs["werkhub-b3"].nodes == ("node2", "node3")
    # half of node3: held by its own partition and a hold job (werkhub.slurm.partial)
    (half,) = wanted.partials
    assert (half.booking_id, half.user, half.gpus) == (2, "wh-bob", (("node3", 1),))
    assert half.name == "werkhub-b2"
    reasons = {s.booking_id: s.reason for s in wanted.skipped}
    assert "not GPUs of the Slurm partition" in reasons[6]
    assert "hub user 'zed' has no OS account" in reasons[7]
    assert "no GPUs" in reasons[8]
    assert set(reasons) == {6, 7, 8}


def actual(**over: Any) -> Reservation:
    values: dict[str, Any] = {
        "name": "werkhub-b7",
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "nodes": ("node1",),
        "users": ("wh-alice",),
        "partition": "gpu",
        "flags": ("SPEC_NODES",),
        "state": "INACTIVE",
    }
    return Reservation(**{**values, **over})


def test_plan() -> None:
    before = T0 - timedelta(hours=1)
    foreign = actual(name="maintenance", users=("root",))
    assert reservations.plan({"werkhub-b7": spec()}, [actual(), foreign], before) == []
    # missing -> create; a stray werkhub reservation -> delete; others untouched
    steps = reservations.plan({"werkhub-b7": spec()}, [actual(name="werkhub-b9"), foreign], before)
    assert [(a.kind, a.name) for a in steps] == [("delete", "werkhub-b9"), ("create", "werkhub-b7")]
    assert steps[0].booking_id == 9
    # extended and moved to another node -> one update with both changes
    longer = spec(end=T0 + timedelta(hours=2), nodes=("node1", "node2"))
    (step,) = reservations.plan({"werkhub-b7": longer}, [actual()], before)
    assert step.kind == "update"
    assert dict(step.changes) == {"EndTime": "2029-01-01T12:00:00", "Nodes": "node1,node2"}
    assert "end 2029-01-01T11:00:00 in Slurm, 2029-01-01T12:00:00 in the ledger" in step.why
    # a booking under way: a start made "now" later is the same start
    during = T0 + timedelta(minutes=10)
    started = actual(start=T0 + timedelta(minutes=3), state="ACTIVE")
    assert reservations.plan({"werkhub-b7": spec()}, [started], during) == []
    # users changed by hand
    (step,) = reservations.plan({"werkhub-b7": spec()}, [actual(users=("bob",))], before)
    assert dict(step.changes) == {"Users": "wh-alice"}
    # the start of a started reservation moved later: made anew
    later = spec(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2))
    steps = reservations.plan({"werkhub-b7": later}, [started], during)
    assert [a.kind for a in steps] == ["delete", "create"]


class FakeClient:
    """Reservations in memory, refusing overlaps like Slurm."""

    def __init__(self, held: list[Reservation]) -> None:
        self.held = {r.name: r for r in held}
        self.calls: list[str] = []

    def reservations(self) -> list[Reservation]:
        return list(self.held.values())

    def create_reservation(self, spec: ReservationSpec, now: datetime) -> None:
        self.calls.append(f"create {spec.name}")
        for other in self.held.values():
            if set(other.nodes) & set(spec.nodes):
                raise errors.SlurmConflict(
                    "Slurm refused: Requested reservation overlaps with another reservation"
                )
        self.held[spec.name] = actual(
            name=spec.name, nodes=spec.nodes, users=(spec.user,), start=spec.start, end=spec.end
        )

    def update_reservation(self, name: str, changes: dict[str, str]) -> None:
        self.calls.append(f"update {name}")

    def delete_reservation(self, name: str) -> None:
        self.calls.append(f"delete {name}")
        self.held.pop(name, None)

    def run(self, argv: Sequence[str], what: str = "") -> str:
        """Partitions and jobs: none (no booking of part of a node here)."""
        self.calls.append(" ".join(argv))
        return ""


def test_reconcile_reports_changes_and_refusals() -> None:
    client = FakeClient(
        [actual(name="werkhub-b9"), actual(name="maint", nodes=("node2",), users=("root",))]
    )
    wanted = reservations.Desired(
        {
            "werkhub-b7": spec(),
            "werkhub-b8": spec(name="werkhub-b8", booking_id=8, nodes=("node2",)),
            "werkhub-b10": spec(name="werkhub-b10", booking_id=10, hub_user="nobody", user="x"),
        },
        (reservations.Skipped(2, "bob", "half a node"),),
    )
    report = reservations.reconcile(
        client,  # type: ignore[arg-type]
        wanted,
        T0 - timedelta(hours=1),
        known_user=lambda name: name != "x",
    )
    assert [c.name for c in report.deleted] == ["werkhub-b9"]
    assert [c.name for c in report.created] == ["werkhub-b7"]
    failed = {f.name: f for f in report.failed}
    assert failed["werkhub-b8"].status == 409 and "overlaps" in failed["werkhub-b8"].error
    assert (
        failed["werkhub-b10"].status == 403 and "no OS account 'x'" in failed["werkhub-b10"].error
    )
    assert "werkhub-b8" not in client.held and "werkhub-b10" not in client.held
    assert "maint" in client.held
    text = "\n".join(report.lines())
    assert "created werkhub-b7: missing in Slurm" in text
    assert "booking 2 (bob) not held by Slurm: half a node" in text
    assert report.as_dict()["failed"][0]["booking_id"] in (8, 10)


def scripted(answers: list[Completed | Exception]) -> tuple[SlurmClient, list[list[str]]]:
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], env: Any, timeout: float) -> Completed:
        calls.append(list(argv))
        assert env["TZ"] == "UTC" and env["SLURM_CONF"] == "/c/slurm.conf"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = SimpleNamespace(now=0.0)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    client = SlurmClient(
        "/c/slurm.conf", retry_seconds=5, runner=runner, sleep=sleep, clock=lambda: clock.now
    )
    return client, calls


DOWN = Completed(1, "", "slurm_load_reservations error: Unable to contact slurm controller "
                 "(connect failure)\n")  # fmt: skip


def test_client_retries_while_the_controller_is_away() -> None:
    client, calls = scripted([DOWN, DOWN, Completed(0, RESERVATION + "\n", "")])
    assert [r.name for r in client.reservations()] == ["werkhub-b7"]
    assert len(calls) == 3
    client, calls = scripted([DOWN] * 100)
    with pytest.raises(errors.SlurmUnavailable, match="Unable to contact slurm controller"):
        client.reservations()
    assert 3 < len(calls) < 100
    # sbatch is not sent twice after a time-out (it may have been accepted)
    client, calls = scripted([subprocess.TimeoutExpired("sbatch", 10)])
    with pytest.raises(errors.SlurmUnavailable, match="no answer in 10 s"):
        client.submit(["sbatch", "--parsable", "--wrap=true"])
    client, _ = scripted([FileNotFoundError("scontrol")])
    with pytest.raises(errors.SlurmUnavailable, match="slurm-client"):
        client.nodes()


def test_client_errors_carry_slurm_words() -> None:
    refusal = Completed(1, "", "Error creating the reservation: Invalid partition name specified\n")
    client, calls = scripted([refusal])
    with pytest.raises(errors.SlurmInvalid) as caught:
        client.create_reservation(spec(partition="nope"), T0)
    assert caught.value.reason == "Invalid partition name specified"
    assert "Slurm refused to reserve node1 for wh-alice as werkhub-b7" in str(caught.value)
    assert len(calls) == 1
    # a create retried after a lost answer finds its own reservation: fine
    duplicate = Completed(1, "", "Error creating the reservation: Duplicate reservation name\n")
    mine = RESERVATION.replace("Nodes=node[1-2]", "Nodes=node1")
    client, calls = scripted([duplicate, Completed(0, mine, "")])
    client.create_reservation(spec(), T0 - timedelta(hours=1))
    client, _ = scripted([duplicate, Completed(0, RESERVATION, "")])
    with pytest.raises(errors.SlurmConflict, match="Duplicate"):
        client.create_reservation(spec(), T0 - timedelta(hours=1))
    gone = Completed(
        1, "", "delete_reservation ReservationName=x: Requested reservation is invalid"
    )
    client, _ = scripted([gone, gone])
    client.delete_reservation("x")
    with pytest.raises(errors.SlurmNotFound):
        client.delete_reservation("x", missing_ok=False)
