"""Slurm backend benchmark (issue 18), against a private Slurm 22.05 cluster started here
(tests/slurm/cluster.py: node1 and node2 with one GPU each, node3 with two) and a real
``werkhub up`` with ``spawner.kind: slurm``. Needs root (the daemons, jobs of OS users).

1. booking to Slurm: ``POST /bookings`` of a whole node until its reservation
   ``werkhub-b<id>`` shows in ``scontrol`` (werkhub holds it before answering), against
   the bare ``scontrol create reservation`` of the same node, user and slot, measured in
   the same run;
2. spawn to ready: a CPU-only server through werkhub's Slurm spawner (hub REST API until
   the hub says ready) against ``sbatch`` of the same batch script (the same builder, the
   same server command and environment) straight to the server's first answer; spawns
   alternate A B B A; ratio of medians (goal <= 1.3);
3. reconciliation with 1,000 bookings (``--bookings``): ``reservations.reconcile`` of
   1,000 whole-node bookings in consecutive slots into an empty cluster (1,000 creates),
   a round with nothing to change (the one that runs every minute), and a round that
   repairs 10 reservations deleted by hand; against the bare Slurm commands of the same
   work (1,000 ``scontrol create reservation`` in a loop; one ``scontrol show
   reservation`` listing).

Prints medians, p90 and ratios against the baselines, and a closing JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from bench_support import ROOT, free_port, wait_for

from tests.slurm.cluster import CPU_PARTITION, NodeSpec, SlurmCluster, missing_programs
from tests.slurm.hubs import MAPPING, node_python, os_users, slurm_werkhub
from tests.slurm.support import PARTITION
from werkhub.booking import ledger
from werkhub.slurm import commands, inventory, jobscript, reservations, users
from werkhub.slurm.cluster import SlurmClient

API = "/services/werkhub/api"
GOAL = 1.3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def line(label: str, values: list[float], unit: str = "s") -> str:
    return (
        f"{label:<44} median {statistics.median(values):8.3f} {unit}  "
        f"p90 {percentile(values, 0.9):8.3f} {unit}  (n={len(values)})"
    )


def reservation_seen(cluster: SlurmCluster, name: str) -> bool:
    return cluster.scontrol("-o", "show", "reservation", name).returncode == 0


# -- 1. booking to Slurm --------------------------------------------------------------


def booking_latency(hub: Any, token: str, cluster: SlurmCluster, rounds: int) -> dict[str, Any]:
    through, bare = [], []
    with hub.client(token) as api:
        for i in range(rounds):
            began = time.perf_counter()
            made = api.post(
                f"{API}/bookings",
                json={"gpu_type": "a100", "count": 1, "start": "now", "duration_minutes": 30},
            )
            assert made.status_code == 201, made.text
            name = f"werkhub-b{made.json()['id']}"
            wait_for(lambda n=name: reservation_seen(cluster, n), timeout=30, interval=0.005)
            through.append(time.perf_counter() - began)
            api.post(f"{API}/bookings/{made.json()['id']}/release").raise_for_status()
            wait_for(lambda n=name: not reservation_seen(cluster, n), timeout=30)
            # the baseline: the same node, user and slot, created by hand
            name = f"bench-bare-{i}"
            began = time.perf_counter()
            done = cluster.scontrol(
                "create", "reservation", f"ReservationName={name}", "StartTime=now",
                "Duration=30", f"Users={MAPPING.prefix}alice", "Nodes=node1",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            wait_for(lambda n=name: reservation_seen(cluster, n), timeout=30, interval=0.005)
            bare.append(time.perf_counter() - began)
            cluster.scontrol("delete", f"ReservationName={name}")
    ratio = statistics.median(through) / statistics.median(bare)
    print(line("booking -> reservation in scontrol (werkhub)", through))
    print(line("bare scontrol create reservation", bare))
    print(f"{'ratio (werkhub / bare)':<44} {ratio:.2f}x")
    return {"booking_s": statistics.median(through), "bare_s": statistics.median(bare),
            "ratio": round(ratio, 2)}  # fmt: skip


# -- 2. spawn to ready ----------------------------------------------------------------


def wait_http(url: str, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def spawn_through_werkhub(hub: Any, token: str, name: str, cluster: SlurmCluster) -> float:
    with hub.client(token) as api:
        began = time.perf_counter()
        reply = api.post(f"/hub/api/users/{name}/server", json={"gpu": "cpu"})
        reply.raise_for_status()
        while reply.status_code != 201:
            server = api.get(f"/hub/api/users/{name}").json()["servers"].get("")
            if server and server.get("ready"):
                break
            time.sleep(0.02)
            reply = httpx.Response(202)
        took = time.perf_counter() - began
    hub.stop_server(name, token)
    return took


def spawn_bare(
    hub: Any, cluster: SlurmCluster, name: str, os_user: str, python: str, extra: dict[str, str]
) -> tuple[float, str]:
    """``sbatch`` of the server's batch script (the spawner's own builder) as ``os_user``,
    timed to the server's first answer; the job is cancelled after."""
    with hub.admin() as api:
        api.post(f"/hub/api/users/{name}")
        token = api.post(f"/hub/api/users/{name}/tokens", json={}).json()["token"]
    port = free_port()
    prefix = f"/user/{name}/"
    account = pwd.getpwnam(os_user)
    env = {
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.ports['hub']}/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{name}",
        "JUPYTERHUB_USER": name,
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "HOME": account.pw_dir,
        "USER": os_user,
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        **extra,
    }
    job = jobscript.JobScript(
        name=f"bench-bare-{name}",
        command=tuple(jobscript.server_command(python, [])),
        env=env,
        workdir=account.pw_dir,
        output="/dev/null",
        minutes=30,
        place=jobscript.Placement(partition=CPU_PARTITION),
    )
    folder = Path(tempfile.mkdtemp(prefix="werkhub-bench-"))
    script = folder / "server.sh"
    script.write_text(jobscript.script(job))
    client = SlurmClient(str(cluster.conf))
    began = time.perf_counter()
    job_id = client.submit(jobscript.submit_argv(os_user, str(script)))
    ready = wait_http(f"http://127.0.0.1:{port}{prefix}api", 120)
    client.cancel(job_id)
    script.unlink()
    folder.rmdir()
    return ready - began, job_id


def spawn_ratio(hub: Any, token: str, cluster: SlurmCluster, rounds: int) -> dict[str, Any]:
    python, extra = node_python(cluster.root)
    through, bare = [], []
    os_user = users.os_name("bob", MAPPING)
    for i in range(rounds):
        order = ("w", "b") if i % 2 == 0 else ("b", "w")  # A B B A
        for which in order:
            if which == "w":
                through.append(spawn_through_werkhub(hub, token, "bob", cluster))
            else:
                took, job_id = spawn_bare(hub, cluster, f"bare{i}", os_user, python, extra)
                bare.append(took)
                wait_for(lambda j=job_id: cluster.job(j).get("JobState") != "RUNNING", 60)
    ratio = statistics.median(through) / statistics.median(bare)
    verdict = "PASS" if ratio <= GOAL else "MISS"
    print(line("spawn to ready through werkhub's spawner", through))
    print(line("sbatch of the same server straight to ready", bare))
    print(f"{'ratio (werkhub / sbatch)':<44} {ratio:.2f}x  goal <= {GOAL}x  {verdict}")
    return {"spawn_s": statistics.median(through), "sbatch_s": statistics.median(bare),
            "ratio": round(ratio, 2), "verdict": verdict}  # fmt: skip


# -- 3. reconciliation with many bookings ----------------------------------------------


def many_bookings(count: int, nodes: list[str]) -> list[dict[str, Any]]:
    """``count`` whole-node bookings of alice in consecutive 30-minute slots from an hour
    ahead, spread over ``nodes`` (no two overlap on a node)."""
    start = ledger.utcnow().replace(second=0, microsecond=0) + timedelta(hours=1)
    found = []
    for i in range(count):
        node = nodes[i % len(nodes)]
        begins = start + timedelta(minutes=30 * (i // len(nodes)))
        found.append({
            "id": 100_000 + i, "user": "alice", "state": "booked", "devices": [f"{node}/0"],
            "start": begins, "end": begins + timedelta(minutes=30),
        })  # fmt: skip
    return found


def reconcile_time(cluster: SlurmCluster, count: int) -> dict[str, Any]:
    client = SlurmClient(str(cluster.conf), timeout=30, retry_seconds=30)
    stock = inventory.read(client, PARTITION)
    bookings = many_bookings(count, ["node1", "node2"])
    mapper = users.mapper(MAPPING)

    def wanted() -> reservations.Desired:
        return reservations.desired(bookings, stock, mapper, ledger.utcnow(), PARTITION)

    began = time.perf_counter()
    first = reservations.reconcile(client, wanted())
    create_s = time.perf_counter() - began
    assert len(first.created) == count and not first.failed, first.lines()[:5]
    began = time.perf_counter()
    steady = reservations.reconcile(client, wanted())
    steady_s = time.perf_counter() - began
    assert not (steady.created or steady.updated or steady.deleted), steady.lines()[:5]
    for booking in bookings[:10]:
        cluster.scontrol("delete", f"ReservationName=werkhub-b{booking['id']}")
    began = time.perf_counter()
    repaired = reservations.reconcile(client, wanted())
    repair_s = time.perf_counter() - began
    assert len(repaired.created) == 10, repaired.lines()
    # baselines: the same listing, and the same creates, by hand
    began = time.perf_counter()
    assert cluster.scontrol("-o", "show", "reservation").returncode == 0
    list_s = time.perf_counter() - began
    for booking in bookings:
        cluster.scontrol("delete", f"ReservationName=werkhub-b{booking['id']}")
    specs = list(wanted().specs.values())
    began = time.perf_counter()
    for spec in specs:
        done = cluster.run(*commands.create_argv(spec, ledger.utcnow()))
        assert done.returncode == 0, done.stderr
    bare_s = time.perf_counter() - began
    for spec in specs:
        cluster.scontrol("delete", f"ReservationName={spec.name}")
    print(f"{f'reconcile {count} bookings into an empty cluster':<44} {create_s:8.2f} s  "
          f"bare creates {bare_s:8.2f} s  ratio {create_s / bare_s:.2f}x")  # fmt: skip
    print(f"{'reconcile round with nothing to change':<44} {steady_s:8.3f} s  "
          f"bare listing {list_s:8.3f} s  ratio {steady_s / list_s:.2f}x")  # fmt: skip
    print(f"{'reconcile round repairing 10 deleted':<44} {repair_s:8.3f} s")
    return {"bookings": count, "create_s": round(create_s, 2), "bare_create_s": round(bare_s, 2),
            "steady_s": round(steady_s, 3), "bare_list_s": round(list_s, 3),
            "repair10_s": round(repair_s, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="bookings and spawns of each kind")
    parser.add_argument("--bookings", type=int, default=1000, help="bookings reconciled")
    args = parser.parse_args()
    missing = missing_programs()
    if missing or os.geteuid() != 0:
        sys.exit(f"bench-slurm needs root and Slurm ({', '.join(missing) or 'not root'})")
    cluster = SlurmCluster.create(
        [NodeSpec("node1", 1), NodeSpec("node2", 1), NodeSpec("node3", 2)], partition=PARTITION
    )
    results: dict[str, Any] = {}
    try:
        began = time.perf_counter()
        cluster.start()
        print(f"private Slurm cluster idle in {time.perf_counter() - began:.1f} s ({ROOT.name})")
        with os_users("alice", "bob"), tempfile.TemporaryDirectory() as tmp:
            hub = slurm_werkhub(Path(tmp), cluster, {"log_level": "WARNING"})
            try:
                tokens = {n: hub.create_user(n) for n in ("alice", "bob")}
                results["booking"] = booking_latency(hub, tokens["alice"], cluster, args.rounds)
                results["spawn"] = spawn_ratio(hub, tokens["bob"], cluster, args.rounds)
            finally:
                hub.stop()
            results["reconcile"] = reconcile_time(cluster, args.bookings)
    finally:
        cluster.remove()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
