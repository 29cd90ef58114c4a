"""Scheduled jobs through ``sbatch`` in a real ``werkhub up`` with ``spawner.kind: slurm``:
a run is a Slurm job of its owner's OS account whose report and MLflow run appear as on
every backend, a GPU job runs on its booked node with the booked GPU, the deadline is the
job's ``--time`` (and a run past it is cancelled and reported as timed out), and
cancelling a running run cancels its Slurm job."""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.slurm.cluster import CPU_PARTITION, SlurmCluster
from tests.slurm.hubs import os_users, slurm_werkhub
from tests.slurm.support import PARTITION
from tests.support.hub import Werkhub, wait_run
from tests.support.net import free_port
from tests.support.notebooks import notebook
from tests.support.summary import note
from tests.support.wait import wait_for

API = "/services/werkhub/api"


NOTEBOOKS = {
    "reports/ok.ipynb": notebook(
        "import getpass, os\ntotal = sum(range(n))\n"
        "print(f'{label}: {total} as {getpass.getuser()}')",
        parameters="n = 3\nlabel = 'sum'",
    ),
    "gpu.ipynb": notebook(
        "import os\nprint('gpus', os.environ.get('CUDA_VISIBLE_DEVICES'),"
        " os.environ.get('SLURM_JOB_GPUS'), 'booking', os.environ.get('WERKHUB_BOOKING_ID'))"
    ),
    "slow.ipynb": notebook("import time\ntime.sleep(seconds)", parameters="seconds = 120"),
}


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict[str, str]]:
    with os_users("alice") as found:
        account = pwd.getpwnam(found["alice"])
        for rel, content in NOTEBOOKS.items():
            path = os.path.join(account.pw_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                json.dump(content, handle)
            for made in (os.path.dirname(path), path):
                os.chown(made, account.pw_uid, account.pw_gid)
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
        tmp_path_factory.mktemp("slurm-jobs"),
        slurm_cluster,
        {
            "jobs": {"tick_seconds": 1, "max_concurrent": 2, "max_per_user": 2},
            # runs log to MLflow through the gateway, as on every backend
            "services": {"mlflow": {"enabled": True, "port": free_port()}},
        },
    )
    note(
        request.config, f"slurm       werkhub up for Slurm jobs in {time.monotonic() - began:.1f} s"
    )
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def token(hub: Werkhub) -> str:
    return hub.create_user("alice")


def run_now(api: httpx.Client, **body: Any) -> tuple[dict[str, Any], int]:
    made = api.post(f"{API}/jobs", json=body)
    assert made.status_code == 201, made.text
    queued = api.post(f"{API}/jobs/{made.json()['id']}/run")
    assert queued.status_code == 202, queued.text
    return made.json(), queued.json()["id"]


def slurm_job(cluster: SlurmCluster, run_id: int, timeout: float = 30) -> dict[str, str]:
    """The Slurm job of run ``run_id`` (by its name), as ``scontrol`` fields."""

    def found() -> dict[str, str] | None:
        for line in cluster.scontrol("-o", "show", "job").stdout.splitlines():
            if f"JobName=werkhub-run-{run_id} " in line:
                return cluster.job(line.split()[0].partition("=")[2])
        return None

    return wait_for(found, timeout=timeout, interval=0.2, what=f"the Slurm job of run {run_id}")


def test_a_run_goes_through_sbatch_and_its_report_appears(
    hub: Werkhub, token: str, slurm_cluster: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    with hub.client(token) as api:
        _, run_id = run_now(
            api,
            name="sums",
            notebook="reports/ok.ipynb",
            parameters={"n": 10, "label": "ten"},
            deadline_s=300,
            cell_timeout_s=300,
            report={"title": "Sums on Slurm"},
        )
        run = wait_run(api, run_id, timeout=180)
        assert run["status"] == "succeeded", api.get(f"{API}/runs/{run_id}/log").text
        took = time.monotonic() - began
        report = api.get(run["report_url"])
        assert report.status_code == 200 and "Sums on Slurm" in report.text
        assert "ten: 45 as whs-alice" in report.text  # ran as the owner's OS user
        (card,) = [c for c in api.get(f"{API}/reports").json() if c["run_id"] == run_id]
        assert card["title"] == "Sums on Slurm"
        log = api.get(f"{API}/runs/{run_id}/log").text
        assert "werkhub: job" in log
        assert run["mlflow_run_id"], f"the run went untracked:\n{log}"
        ml = api.get(
            "/services/mlflow/api/2.0/mlflow/runs/get", params={"run_id": run["mlflow_run_id"]}
        )
        assert ml.status_code == 200, ml.text
        tags = {t["key"]: t["value"] for t in ml.json()["run"]["data"]["tags"]}
        assert tags["werkhub.run_id"] == str(run_id) and tags["werkhub.status"] == "succeeded"
    job = slurm_job(slurm_cluster, run_id)
    assert job["UserId"].startswith("whs-alice(") and job["JobState"] == "COMPLETED"
    assert job["Partition"] == CPU_PARTITION and job.get("TresPerNode", "(null)") == "(null)"
    assert job["TimeLimit"] == "00:06:00"  # the deadline (300 s and the report's grace)
    home = pwd.getpwnam("whs-alice").pw_dir
    assert not os.path.exists(f"{home}/.werkhub/jobs/run-{run_id}")  # the stage is gone
    note(
        request.config,
        f"slurm       a scheduled run through sbatch, queued to report in {took:.1f} s",
    )


def reservation_of(cluster: SlurmCluster, job: dict[str, str]) -> str:
    """The job's reservation: from ``scontrol``, or, once the run's booking ended and
    its reservation was deleted (Slurm then drops the name from the job's record), from
    the job completion record (``sacct -c``), which keeps it."""
    if job.get("Reservation"):
        return job["Reservation"]
    done = cluster.run("sacct", "-c", "-P", "-n", "-j", job["JobId"], "-o", "JobID,Reservation")
    for line in done.stdout.splitlines():
        job_id, _, name = line.partition("|")
        if job_id == job["JobId"]:
            return name
    return ""


def test_a_gpu_job_runs_on_its_booked_node(
    hub: Werkhub, token: str, slurm_cluster: SlurmCluster
) -> None:
    with hub.client(token) as api:
        _, run_id = run_now(
            api, name="gpu", notebook="gpu.ipynb", gpu={"type": "a100", "count": 1, "minutes": 10}
        )
        run = wait_run(api, run_id, timeout=180)
        assert run["status"] == "succeeded", api.get(f"{API}/runs/{run_id}/log").text
        booking = api.get(f"{API}/bookings/{run['booking_id']}").json()
        printed = json.dumps(api.get(f"{API}/runs/{run_id}/notebook").json()["cells"])
    node = booking["devices"][0].split("/")[0]
    job = slurm_job(slurm_cluster, run_id)
    assert job["NodeList"] == node and job["TresPerNode"] == "gres:gpu:a100:1"
    if node in ("node1", "node2"):  # a single-GPU node: the whole node, its reservation
        assert job["Partition"] == PARTITION
        assert reservation_of(slurm_cluster, job) == f"werkhub-b{booking['id']}"
    else:  # one of node3's two GPUs: the booking's own partition
        assert job["Partition"] == f"werkhub-b{booking['id']}"
    assert f"booking {booking['id']}" in printed
    cuda = printed.split("gpus ")[1].split(" ")
    assert cuda[0] == cuda[1] and cuda[0] in ("0", "1"), printed


def test_the_deadline_is_slurms_time_limit_and_a_late_run_is_cancelled(
    hub: Werkhub, token: str, slurm_cluster: SlurmCluster
) -> None:
    with hub.client(token) as api:
        _, run_id = run_now(
            api, name="late", notebook="slow.ipynb", deadline_s=15, cell_timeout_s=15
        )
        job = slurm_job(slurm_cluster, run_id)
        assert job["TimeLimit"] == "00:01:00"
        run = wait_run(api, run_id, timeout=120)
        assert run["status"] == "timed_out", run
        assert api.get(run["report_url"]).status_code == 200  # a report of what ran
    assert slurm_cluster.job(job["JobId"])["JobState"] in ("CANCELLED", "TIMEOUT", "COMPLETED")


def test_cancelling_a_running_run_cancels_its_slurm_job(
    hub: Werkhub, token: str, slurm_cluster: SlurmCluster
) -> None:
    with hub.client(token) as api:
        made, run_id = run_now(
            api, name="stopped", notebook="slow.ipynb", deadline_s=600, cell_timeout_s=600
        )
        job = slurm_job(slurm_cluster, run_id)
        wait_for(
            lambda: slurm_cluster.job(job["JobId"]).get("JobState") == "RUNNING",
            timeout=60,
            what="the run's Slurm job to run",
        )
        assert api.delete(f"{API}/jobs/{made['id']}").status_code == 204
        wait_for(
            lambda: slurm_cluster.job(job["JobId"]).get("JobState") == "CANCELLED",
            timeout=30,
            what="the run's Slurm job to be cancelled",
        )
        run = wait_run(api, run_id, timeout=60)
        assert run["status"] in ("interrupted", "cancelled"), run
