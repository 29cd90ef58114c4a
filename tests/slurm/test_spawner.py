"""``spawner.kind: slurm`` in a real ``werkhub up`` against the private cluster: a server is a
Slurm job of the user's OS account, inside the booking's reservation with exactly the
booked GPU (read from the server's own environment), on the booked node with ``--gres``
in the booking's own partition for part of a node, in the CPU partition without GPUs
outside a booking; the spawn's progress shows why the job waits; a hub user without OS
account is refused with 403; a restart of slurmctld leaves the server running, polled and
stoppable."""

from __future__ import annotations

import asyncio
import pwd
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.slurm.cluster import CPU_PARTITION, SlurmCluster
from tests.slurm.hubs import job_env, job_of, os_users, slurm_werkhub
from tests.slurm.support import PARTITION
from tests.support.hub import Werkhub
from tests.support.summary import note
from tests.support.wait import wait_for
from werkhub.spawners.slurm import SlurmJobSpawner

API = "/services/werkhub/api"
#: seconds between the hub's polls of each server (slurm.poll_seconds' smallest value)
POLL_S = 5


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict[str, str]]:
    """alice and bob have OS users (whs-alice, whs-bob); carol has none."""
    with os_users("alice", "bob") as found:
        yield found


@pytest.fixture(scope="module")
def hub(
    slurm_cluster: SlurmCluster,
    accounts: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Werkhub]:
    began = time.monotonic()
    werkhub = slurm_werkhub(
        tmp_path_factory.mktemp("slurm-spawner"), slurm_cluster, poll_seconds=POLL_S
    )
    note(
        request.config,
        f"slurm       werkhub up with Slurm servers in {time.monotonic() - began:.1f} s",
    )
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def tokens(hub: Werkhub) -> dict[str, str]:
    return {name: hub.create_user(name) for name in ("alice", "bob", "carol")}


def book(api: httpx.Client, count: int = 1) -> dict[str, Any]:
    body = {"gpu_type": "a100", "count": count, "start": "now", "duration_minutes": 30}
    made = api.post(f"{API}/bookings", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def spawn_watching(
    hub: Werkhub, name: str, token: str, options: dict[str, Any], until: str = ""
) -> tuple[int, str, float]:
    """Spawn and read the progress stream while it starts: the hub's answer (0 when
    ``until`` is given), the events (up to ``until`` when given, else to the end) and the
    seconds from the request to ready."""
    replies: list[httpx.Response] = []
    began = time.monotonic()

    def start() -> None:
        with hub.client(token) as api:
            replies.append(api.post(f"/hub/api/users/{name}/server", json=options))

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    events = ""
    ended = ('"ready": true', '"failed": true')
    with hub.client(token) as api:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any(e in events for e in ended):
            with api.stream("GET", f"/hub/api/users/{name}/server/progress", timeout=180) as got:
                if got.status_code != 200:
                    time.sleep(0.1)
                    continue
                for line in got.iter_lines():
                    events += line + "\n"
                    if until and until in events:
                        return 0, events, 0.0
    starter.join(60)
    assert replies, "the spawn request did not come back"
    if replies[0].status_code in (201, 202) and '"failed": true' not in events:
        hub.spawn(name, token, timeout=120)
    return replies[0].status_code, events, time.monotonic() - began


def stop(hub: Werkhub, cluster: SlurmCluster, name: str, token: str, job_id: str) -> None:
    hub.stop_server(name, token)
    state = cluster.job(job_id).get("JobState", "")
    assert state in ("CANCELLED", "COMPLETED", ""), state


def test_a_whole_node_booking_runs_the_server_in_its_reservation(
    hub: Werkhub,
    tokens: dict[str, str],
    slurm_cluster: SlurmCluster,
    accounts: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    with hub.client(tokens["alice"]) as api:
        booking = book(api)
    assert booking["devices"] == ["node1/0"]  # node1 holds one GPU: the whole node
    status, events, ready_s = spawn_watching(hub, "alice", tokens["alice"], {"gpu": "booking"})
    assert status in (201, 202), events
    job = job_of(slurm_cluster, "whs-alice")
    assert "Checking your GPU booking" in events
    assert f"Slurm job {job['JobId']} submitted as whs-alice: 1 a100 GPU(s) on node1" in events
    assert f"in reservation werkhub-b{booking['id']}" in events
    assert f"Slurm job {job['JobId']} is running on node1" in events
    assert job["JobState"] == "RUNNING" and job["UserId"].startswith("whs-alice(")
    assert job["Reservation"] == f"werkhub-b{booking['id']}"
    assert (job["NodeList"], job["Partition"]) == ("node1", PARTITION)
    assert job["TresPerNode"] == "gres:gpu:a100:1"
    # --time is the booking's end: 30 minutes from the current minute, whole minutes left
    limit = job["TimeLimit"].split(":")
    assert limit[0] == "00" and 28 <= int(limit[1]) <= 30, job["TimeLimit"]
    env = job_env(job["JobId"])
    assert env["_UID"] == str(pwd.getpwnam(accounts["alice"]).pw_uid)
    assert env["USER"] == "whs-alice" and env["JUPYTERHUB_USER"] == "alice"
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["SLURM_JOB_GPUS"] == "0"
    assert env["WERKHUB_BOOKING_ID"] == str(booking["id"])
    assert env["WERKHUB_GPU_UNITS"] == "node1/0"
    with hub.client(tokens["alice"]) as api:
        assert api.get("/user/alice/api/status").status_code == 200  # through the proxy
        assert api.get(f"{API}/bookings/{booking['id']}").json()["state"] == "active"
    stop(hub, slurm_cluster, "alice", tokens["alice"], job["JobId"])
    with hub.client(tokens["alice"]) as api:
        api.post(f"{API}/bookings/{booking['id']}/release").raise_for_status()
    note(request.config, f"slurm       a booked server ready {ready_s:.1f} s after the spawn")


def test_part_of_a_node_gets_gres_on_the_booked_node(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster
) -> None:
    with hub.client(tokens["bob"]) as api:
        whole = [book(api), book(api)]  # node1 and node2: the single-GPU nodes
    with hub.client(tokens["alice"]) as api:
        part = book(api)
    assert [b["devices"] for b in whole] == [["node1/0"], ["node2/0"]]
    assert part["devices"][0].startswith("node3/")
    status, events, _ = spawn_watching(hub, "alice", tokens["alice"], {"gpu": "booking"})
    assert status in (201, 202), events
    job = job_of(slurm_cluster, "whs-alice")
    assert job.get("Reservation", "(null)") == "(null)" and job["NodeList"] == "node3"
    assert job["TresPerNode"] == "gres:gpu:a100:1"
    # the booking's own partition, where the booked user's job replaces the hold job
    assert job["Partition"] == f"werkhub-b{part['id']}"
    env = job_env(job["JobId"])
    # Slurm picks which of node3's two GPUs: one of them, never both
    assert env["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    assert env["SLURM_JOB_GPUS"] == env["CUDA_VISIBLE_DEVICES"]
    stop(hub, slurm_cluster, "alice", tokens["alice"], job["JobId"])
    for owner, b in (("bob", whole[0]), ("bob", whole[1]), ("alice", part)):
        with hub.client(tokens[owner]) as api:
            api.post(f"{API}/bookings/{b['id']}/release").raise_for_status()


def test_without_booking_the_server_waits_then_runs_cpu_only_and_says_why(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster
) -> None:
    blockers = []
    for node in ("node1", "node2", "node3"):  # every CPU of the CPU partition taken
        done = slurm_cluster.run(
            "sbatch", "--parsable", f"--partition={CPU_PARTITION}", f"--nodelist={node}",
            "--exclusive", "--time=5", "--output=/dev/null", f"--chdir={slurm_cluster.jobs_dir}",
            "--wrap=sleep 300",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        blockers.append(done.stdout.strip())
    for blocker in blockers:
        wait_for(lambda b=blocker: slurm_cluster.job(b).get("JobState") == "RUNNING", 30)
    _, events, _ = spawn_watching(hub, "bob", tokens["bob"], {}, until="is pending (")
    job = job_of(slurm_cluster, "whs-bob")
    assert f"Slurm job {job['JobId']} is pending (Resources)" in events, events
    assert "CPU only, partition cpu" in events
    slurm_cluster.cancel(*blockers)
    hub.spawn("bob", tokens["bob"], timeout=120)
    job = job_of(slurm_cluster, "whs-bob")
    assert job["JobState"] == "RUNNING" and job["Partition"] == CPU_PARTITION
    assert (
        job.get("TresPerNode", "") in ("(null)", "")
        and job.get("Reservation", "(null)") == "(null)"
    )
    env = job_env(job["JobId"])
    assert env["CUDA_VISIBLE_DEVICES"] == "" and "SLURM_JOB_GPUS" not in env
    assert env["WERKHUB_GPU_COUNT"] == "0" and env["USER"] == "whs-bob"
    stop(hub, slurm_cluster, "bob", tokens["bob"], job["JobId"])


def test_a_hub_user_without_os_account_is_refused(
    hub: Werkhub, tokens: dict[str, str], slurm_cluster: SlurmCluster
) -> None:
    with hub.client(tokens["carol"]) as api:
        reply = api.post("/hub/api/users/carol/server", json={})
        text = reply.text
        if reply.status_code == 202:  # a loaded machine: the refusal lands in the stream
            text = api.get("/hub/api/users/carol/server/progress", timeout=60).text
        else:
            assert reply.status_code == 403, reply.text
        assert "hub user 'carol' has no OS account 'whs-carol'" in text
        assert api.get("/hub/api/users/carol").json()["servers"] == {}
    assert not slurm_cluster.run("squeue", "-h").stdout.strip()  # nothing was submitted


def test_a_controller_restart_leaves_the_server_running_and_stoppable(
    hub: Werkhub,
    tokens: dict[str, str],
    slurm_cluster: SlurmCluster,
    request: pytest.FixtureRequest,
) -> None:
    status, events, _ = spawn_watching(hub, "alice", tokens["alice"], {"gpu": "cpu"})
    assert status in (201, 202), events
    job = job_of(slurm_cluster, "whs-alice")
    seen = len(hub.output)
    slurm_cluster.stop_controller()
    began = time.monotonic()
    try:
        # the hub polls while the controller is away (every POLL_S): still running
        wait_for(
            lambda: any("Slurm unreachable polling job" in line for line in hub.output[seen:]),
            timeout=POLL_S * 3 + 10,
            interval=0.5,
            what="the hub to poll the server while slurmctld is down",
        )
        with hub.client(tokens["alice"]) as api:
            assert api.get("/user/alice/api/status").status_code == 200
            assert api.get("/hub/api/users/alice").json()["servers"][""]["ready"] is True
    finally:
        slurm_cluster.start_controller()
    down_s = time.monotonic() - began
    time.sleep(POLL_S + 1)  # a poll after the restart finds the job again
    assert slurm_cluster.job(job["JobId"])["JobState"] == "RUNNING"
    with hub.client(tokens["alice"]) as api:
        assert api.get("/hub/api/users/alice").json()["servers"][""]["ready"] is True
    # the state the hub keeps is enough for a new spawner (a restarted hub) to find the job
    with hub.admin() as api:
        state = api.get("/hub/api/users/alice").json()["servers"][""]["state"]
    assert state["slurm_job_id"] == job["JobId"] and state["slurm_user"] == "whs-alice"
    found = SlurmJobSpawner(slurm_conf=str(slurm_cluster.conf))
    found.load_state(state)
    assert asyncio.run(found.poll()) is None  # running
    stop(hub, slurm_cluster, "alice", tokens["alice"], job["JobId"])
    assert asyncio.run(found.poll()) == 1  # cancelled
    note(request.config, f"slurm       a server outlived {down_s:.0f} s without slurmctld")
