"""The Slurm backend wired into a real ``werkhub up``: the ledger books the test cluster's
GPUs, a booking of a whole node made through the REST API is a Slurm reservation for the
booker's OS user before the answer, extend and shorten move its end, cancel and release
remove it within seconds; a booking of part of a node gets its partition and hold job; a
reservation deleted and a hold job cancelled by hand come back through the reconciliation
loop and are reported on the admin status API and page (with whether GRES reservations
work: tried, refused by 22.05), and Slurm's refusals withdraw the booking with a 4xx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.slurm.cluster import SlurmCluster
from tests.slurm.support import MAPPING, PARTITION
from tests.support.hub import Werkhub, make_werkhub
from tests.support.summary import note
from tests.support.wait import wait_for

API = "/services/werkhub/api"
#: the smallest period the schema allows: the loop repairs drift within it
RECONCILE_SECONDS = 5
POLICIES = {
    "default": {
        "gpu_hours_per_week": 1000,
        "max_booking_hours": 48,
        "max_advance_days": 60,
        "max_concurrent_gpus": 8,
    }
}


@pytest.fixture(scope="module")
def hub(
    slurm_cluster: SlurmCluster,
    os_users: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "slurm": {
            "enabled": True,
            "conf": str(slurm_cluster.conf),
            "partition": PARTITION,
            "user_mapping": MAPPING.model_dump(),
            "reconcile_seconds": RECONCILE_SECONDS,
            "retry_seconds": 20,
        },
        "booking": {"policies": POLICIES},
        "services": {"mlflow": {"enabled": False}},
    }
    werkhub = make_werkhub(tmp_path_factory.mktemp("slurm-werkhub"), extra)
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    werkhub.start()
    note(request.config, f"slurm       werkhub up with Slurm in {time.monotonic() - began:.1f} s")
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def tokens(hub: Werkhub) -> dict[str, str]:
    """alice and bob have OS users (wh-alice, wh-bob); carol has none."""
    return {name: hub.create_user(name) for name in ("alice", "bob", "carol")}


def reservations(cluster: SlurmCluster) -> dict[str, dict[str, str]]:
    """Slurm's reservations by name, each as its ``key=value`` fields."""
    out = cluster.scontrol("-o", "show", "reservation").stdout
    found = {}
    for line in out.splitlines():
        if line.startswith("ReservationName="):
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            found[fields["ReservationName"]] = fields
    return found


def book(api: httpx.Client, **body: Any) -> httpx.Response:
    body = {"gpu_type": "a100", "count": 1, "start": "now", "duration_minutes": 30, **body}
    return api.post(f"{API}/bookings", json=body)


def withdrawn_by_slurm(api: httpx.Client) -> list[str]:
    """The states of the caller's bookings, when all that are still held are none and the
    rest were withdrawn by werkhub after Slurm's refusal: the states of those."""
    found = api.get(f"{API}/bookings").json()
    assert not [b["id"] for b in found if b["state"] in ("booked", "active")]
    return [b["state"] for b in found if b["audit"][-1]["actor"] == "slurm"]


def quiet(hub: Werkhub, calm: float = 1.0) -> None:
    """Wait until no reconciliation round has run for ``calm`` seconds."""
    with hub.admin() as api:
        rounds, since = -1, time.monotonic()
        while time.monotonic() - since < calm:
            now = api.get(f"{API}/slurm/status").json()["rounds"]
            if now != rounds:
                rounds, since = now, time.monotonic()
            time.sleep(0.1)


def gone(cluster: SlurmCluster, name: str) -> bool:
    return name not in reservations(cluster)


def hold_jobs(cluster: SlurmCluster, name: str) -> list[tuple[str, str]]:
    """(job id, state) of werkhub's live hold jobs called ``name``."""
    out = cluster.run("squeue", "--all", "-h", "-n", name, "-o", "%i %T").stdout
    return [(line.split()[0], line.split()[1]) for line in out.splitlines() if line.strip()]


def partition_state(cluster: SlurmCluster, name: str) -> str:
    """State of partition ``name`` ('' when there is none)."""
    out = cluster.scontrol("-o", "show", "partition", name)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    return fields.get("State", "") if out.returncode == 0 else ""


def test_extend_and_shorten_move_the_reservations_end(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster
) -> None:
    with hub.client(tokens["alice"]) as api:
        made = book(api)
        assert made.status_code == 201, made.text
        booking = made.json()
        name = f"werkhub-b{booking['id']}"

        def end_in_slurm() -> datetime:
            held = reservations(slurm_cluster)[name]
            return datetime.fromisoformat(held["EndTime"]).replace(tzinfo=UTC)

        end = datetime.fromisoformat(booking["end"])
        assert end_in_slurm() == end
        for minutes in (30, -20):
            wanted = end + timedelta(minutes=minutes)
            changed = api.patch(f"{API}/bookings/{booking['id']}", json={"end": wanted.isoformat()})
            assert changed.status_code == 200, changed.text
            wait_for(lambda w=wanted: end_in_slurm() == w, timeout=10, what=f"{name} end moved")
        api.post(f"{API}/bookings/{booking['id']}/release").raise_for_status()
        wait_for(lambda: gone(slurm_cluster, name), timeout=10, what=f"{name} to go")


def test_the_ledger_books_the_clusters_gpus(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster
) -> None:
    with hub.client(tokens["alice"]) as api:
        stock = api.get(f"{API}/gpus").json()
    assert {u["id"] for u in stock["units"]} == {"node1/0", "node2/0", "node3/0", "node3/1"}
    assert stock["simulated"] is False
    assert [(t["gpu_type"], t["units"], t["max_per_node"]) for t in stock["types"]] == [
        ("a100", 4, 2)
    ]
    listed = hub.cli("gpus", "list", "--config", str(hub.config))
    assert listed.returncode == 0, listed.stderr
    assert "a100\t4 unit(s), at most 2 per node\n" in listed.stdout
    assert f"# Slurm partition {PARTITION}" in listed.stdout
    assert "node3\t2 GPU(s)\tIDLE\n" in listed.stdout


def test_a_booked_whole_node_is_reserved_and_cancel_and_release_remove_it(
    hub: Werkhub,
    tokens: dict[str, str],
    slurm_cluster: SlurmCluster,
    os_users: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    later = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=3)
    with hub.client(tokens["alice"]) as api:
        began = time.monotonic()
        made = book(api, start=later.isoformat(), duration_minutes=60)
        book_s = time.monotonic() - began
        assert made.status_code == 201, made.text
        future = made.json()
        assert future["devices"] == ["node1/0"]  # best fit: the smallest free node
        name = f"werkhub-b{future['id']}"
        held = reservations(slurm_cluster).get(name)  # held before the answer
        assert held is not None, reservations(slurm_cluster)
        assert held["Users"] == os_users["alice"] == "wh-alice" and held["Nodes"] == "node1"
        assert datetime.fromisoformat(held["StartTime"]).replace(tzinfo=UTC) == later
        began = time.monotonic()
        assert api.delete(f"{API}/bookings/{future['id']}").json()["state"] == "cancelled"
        wait_for(lambda: gone(slurm_cluster, name), timeout=10, what=f"{name} to go")
        cancel_s = time.monotonic() - began

        now = book(api)
        assert now.status_code == 201, now.text
        name = f"werkhub-b{now.json()['id']}"
        held = reservations(slurm_cluster)[name]
        assert held["Users"] == "wh-alice" and held["Nodes"] == "node1"
        began = time.monotonic()
        released = api.post(f"{API}/bookings/{now.json()['id']}/release")
        assert released.json()["state"] == "released"
        wait_for(lambda: gone(slurm_cluster, name), timeout=10, what=f"{name} to go")
        release_s = time.monotonic() - began
    note(
        request.config,
        f"slurm       booking held and answered in {book_s:.2f} s; reservation gone "
        f"{cancel_s:.1f} s after cancel, {release_s:.1f} s after release",
    )


def test_drift_is_repaired_by_the_loop_and_reported_to_admins(
    hub: Werkhub,
    tokens: dict[str, str],
    slurm_cluster: SlurmCluster,
    request: pytest.FixtureRequest,
) -> None:
    with hub.client(tokens["alice"]) as api:
        mine = book(api).json()
    with hub.client(tokens["bob"]) as api:
        whole = book(api).json()
        part = book(api).json()
    assert (mine["devices"], whole["devices"], part["devices"]) == (
        ["node1/0"],
        ["node2/0"],
        ["node3/0"],
    )
    name = f"werkhub-b{mine['id']}"
    held = reservations(slurm_cluster)
    assert {name, f"werkhub-b{whole['id']}"} <= set(held)
    # part of a node: no reservation, but its own partition and a hold job
    assert f"werkhub-b{part['id']}" not in held
    hold = f"werkhub-h{part['id']}-node3"
    wait_for(
        lambda: [s for _, s in hold_jobs(slurm_cluster, hold)] == ["RUNNING"],
        timeout=RECONCILE_SECONDS + 10,
        what=f"{hold} to run",
    )
    assert partition_state(slurm_cluster, f"werkhub-b{part['id']}") == "UP"
    quiet(hub)  # the rounds the bookings asked for are over: the timer's round repairs
    # by hand: alice's reservation deleted, bob's hold job cancelled
    assert slurm_cluster.scontrol("delete", f"ReservationName={name}").returncode == 0
    ((hold_id, _),) = hold_jobs(slurm_cluster, hold)
    slurm_cluster.cancel(hold_id)
    began = time.monotonic()
    wait_for(
        lambda: name in reservations(slurm_cluster),
        timeout=RECONCILE_SECONDS + 5,
        interval=0.2,
        what=f"{name} to be made again",
    )
    repaired_s = time.monotonic() - began
    assert reservations(slurm_cluster)[name]["Users"] == "wh-alice"
    wait_for(
        lambda: [j for j, s in hold_jobs(slurm_cluster, hold) if j != hold_id and s == "RUNNING"],
        timeout=RECONCILE_SECONDS + 10,
        what=f"{hold} to be submitted again",
    )
    with hub.admin() as api:
        status = api.get(f"{API}/slurm/status").json()
        assert status["enabled"] is True and status["partition"] == PARTITION
        assert f"created {name}: missing in Slurm" in [e["line"] for e in status["recent"]]
        lines = [e["line"] for e in status["recent"]]
        assert [line for line in lines if line.startswith(f"created {hold}: 1 GPU of node3")]
        report = status["report"]
        assert report["failed"] == [] and report["skipped"] == []
        assert set(status["nodes"]) == {"node1", "node2", "node3"} and status["unusable"] == {}
        assert status["gres_reservations"]["supported"] is False  # tried: Slurm 22.05
        assert "gres/gpu" in status["gres_reservations"]["detail"]
        assert status["hold_partition"] == "werkhub-hold"
        page = api.get("/services/werkhub/admin")
        assert page.status_code == 200
        assert "Slurm reservations" in page.text and "GRES reservations" in page.text
        assert f"created {name}: missing in Slurm" in page.text
        assert f"created {hold}: 1 GPU of node3" in page.text
    for owner, booking in (("alice", mine), ("bob", whole), ("bob", part)):
        with hub.client(tokens[owner]) as api:
            api.post(f"{API}/bookings/{booking['id']}/release").raise_for_status()
    wait_for(
        lambda: not [n for n in reservations(slurm_cluster) if n.startswith("werkhub-")],
        timeout=10,
        what="werkhub's reservations to go",
    )
    wait_for(
        lambda: (
            not hold_jobs(slurm_cluster, hold)
            and not partition_state(slurm_cluster, f"werkhub-b{part['id']}")
        ),
        timeout=15,
        what="the hold job and the booking partition to go",
    )
    note(request.config, f"slurm       a deleted reservation made again in {repaired_s:.1f} s")


def test_the_status_is_for_admins_only(hub: Werkhub, tokens: dict[str, str]) -> None:
    with hub.client(tokens["alice"]) as api:
        refused = api.get(f"{API}/slurm/status")
    assert refused.status_code == 403
    assert "administrators" in refused.json()["detail"]
    with hub.client(tokens["alice"]) as api:
        assert api.get("/services/werkhub/admin").status_code == 403


def test_slurms_refusal_withdraws_the_booking(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster
) -> None:
    done = slurm_cluster.scontrol(
        "create", "reservation", "ReservationName=maintenance", "StartTime=now",
        "Duration=120", "Users=root", "Nodes=node1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with hub.client(tokens["alice"]) as api:
        refused = book(api)
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert "overlaps with another reservation" in detail and "withdrawn" in detail
        assert withdrawn_by_slurm(api) == ["released"]
    with hub.client(tokens["carol"]) as api:
        orphan = book(api)
        assert orphan.status_code == 403, orphan.text
        assert "no OS account 'wh-carol'" in orphan.json()["detail"]
        assert withdrawn_by_slurm(api) == ["released"]
    assert set(reservations(slurm_cluster)) == {"maintenance"}


def test_an_ended_bookings_leftover_reservation_does_not_refuse_a_new_one(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster, os_users: dict[str, str]
) -> None:
    """A round that read the ledger before a booking ended may make its reservation again
    after the end: that leftover is werkhub's own, and a new booking of the node removes it
    instead of being refused."""
    quiet(hub)
    done = slurm_cluster.scontrol(
        "create", "reservation", "ReservationName=werkhub-b9999", "StartTime=now",
        "Duration=120", f"Users={os_users['bob']}", "Nodes=node1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with hub.client(tokens["alice"]) as api:
        made = book(api)
        assert made.status_code == 201, made.text
        booking = made.json()
        assert booking["devices"] == ["node1/0"]
        held = reservations(slurm_cluster)
        assert "werkhub-b9999" not in held
        assert held[f"werkhub-b{booking['id']}"]["Nodes"] == "node1"
        api.post(f"{API}/bookings/{booking['id']}/release").raise_for_status()


def test_slurm_accounting_is_merged_into_the_ledgers_usage(
    hub: Werkhub,
    tokens: dict[str, str],
    slurm_cluster: SlurmCluster,
    os_users: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    """Without slurmdbd (the test cluster): ``sacct -c`` on the jobcomp file, GPUs from the
    job's gres request as the controller showed it; the job's GPU time appears in the
    ledger's usage and beside werkhub's own figures in the status and on the admin page."""
    with hub.client(tokens["alice"]) as api:
        made = book(api)
        assert made.status_code == 201, made.text
        booking = made.json()
    name = f"werkhub-b{booking['id']}"
    job_id = slurm_cluster.submit(os_users["alice"], f"--reservation={name}", wrap="sleep 6")
    wait_for(
        lambda: slurm_cluster.job(job_id).get("JobState") == "COMPLETED",
        timeout=60,
        what=f"job {job_id} to complete",
    )

    def figures() -> dict[str, Any] | None:
        with hub.admin() as api:
            status = api.get(f"{API}/slurm/status").json()["accounting"]
        found = [b for b in status.get("bookings", []) if b["booking_id"] == booking["id"]]
        return {**status, "mine": found[0]} if found and found[0]["jobs"] else None

    began = time.monotonic()
    wait_for(lambda: figures() is not None, timeout=RECONCILE_SECONDS + 10, what="accounting")
    shown = figures()
    assert shown is not None
    merged_s = time.monotonic() - began
    assert shown["source"] == "jobcomp" and "no slurmdbd" in shown["note"], shown
    mine = shown["mine"]
    assert mine["jobs"] == [job_id] and mine["estimated"] is False
    # the job slept 6 s on one GPU (Slurm's times are whole seconds)
    assert 5 / 3600 <= mine["used_gpu_hours"] <= 9 / 3600, mine
    assert mine["booked_gpu_hours"] > 0 and mine["idle_gpu_hours"] >= 0
    # merged: the ledger counts the same time as used (no hub server ran)
    assert abs(mine["werkhub_used_gpu_hours"] - mine["used_gpu_hours"]) < 2 / 3600, mine
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with hub.client(tokens["alice"]) as api:
        window = {"start": day.isoformat(), "end": (day + timedelta(days=2)).isoformat()}
        used = api.get(f"{API}/usage", params=window).json()
    assert used["users"]["alice"]["used"] >= 0.0014, used  # 5 s and more, to 4 places
    with hub.admin() as api:
        page = api.get("/services/werkhub/admin").text
    assert "GPU time per booking" in page and "sacct -c" in page
    with hub.client(tokens["alice"]) as api:
        api.post(f"{API}/bookings/{booking['id']}/release").raise_for_status()
    note(
        request.config,
        f"slurm       a job's GPU time in the ledger {merged_s:.1f} s after it ended",
    )
