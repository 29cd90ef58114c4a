"""A job run in a real container through podman's Docker API: the curated base image, the
owner's named home volume, uid 1000 without privileges, werkhub's own runner inside
(papermill, report, MLflow on the host's 127.0.0.1), outputs copied out, the container
removed; a run past its deadline is stopped and reported as timed out. The service
trusts what it observes: a home notebook gets a local job's checks before the start, a
container's claim of success is not believed against its exit code, and output past the
cap is not copied."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import nbformat
import pytest
from mlflow.tracking import MlflowClient

from tests.containers.conftest import BuiltImages
from tests.templates.conftest import MlflowServer, mlflow_server  # noqa: F401 (fixture)
from werkhub.jobs.run import docker as docker_runner
from werkhub.jobs.run.docker import end_run_containers, run_in_container
from werkhub.jobs.run.manifests import container_out_dir

CELLS = [
    ("seconds = 0\nlabel = 'x'", ["parameters"]),
    (
        "import os, time\nimport mlflow\n"
        "mlflow.start_run()\nmlflow.log_metric('uid', os.getuid())\n"
        "print('uid', os.getuid(), 'home', os.path.expanduser('~'), 'cwd', os.getcwd())\n"
        "print('devices', os.environ.get('NVIDIA_VISIBLE_DEVICES'))\n"
        "print('request env leaked:', 'WERKHUB_RUN_REQUEST' in os.environ)\n"
        "time.sleep(seconds)\nprint('label', label)",
        [],
    ),
]


@pytest.fixture(scope="module")
def api(podman_api: Path) -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url=f"unix://{podman_api}", version="auto")
    yield client
    client.close()


#: what a user's notebook can do to its own run: claim success and end the runner before
#: it writes the real result, or fill the run folder
ATTACK = [
    ("folder = ''\nmode = ''", ["parameters"]),
    (
        "import json, os, pathlib, signal\n"
        "out = pathlib.Path(folder)\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "if mode == 'claim':\n"
        "    fake = {'status': 'succeeded', 'started': '2000-01-01T00:00:00Z',\n"
        "            'finished': '2000-01-01T00:00:01Z', 'report': '/etc/passwd'}\n"
        "    (out / 'result.json').write_text(json.dumps(fake))\n"
        "    os.kill(os.getppid(), signal.SIGTERM)\n"
        "if mode == 'big':\n"
        "    (out / 'big.bin').write_bytes(os.urandom(3 * 1024 * 1024))",
        [],
    ),
]


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), 1000, 100, 0o644
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.uid, info.gid = tarfile.SYMTYPE, target, 1000, 100
            archive.addfile(info)
    return buffer.getvalue()


def _notebook(cells: list[tuple[str, list[str]]]) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in cells]
    return nbformat.writes(nb).encode()


@pytest.fixture(scope="module")
def owner(api: docker.APIClient, built_images: BuiltImages) -> Iterator[str]:
    """A user whose home volume holds reports/daily.ipynb (written through the API)."""
    name = f"jobs{uuid.uuid4().hex[:8]}"
    volume = f"werkhub-home-{name}"
    api.create_volume(volume)
    helper = api.create_container(
        built_images.tags["base"],
        command=["sleep", "60"],
        user="1000:100",
        host_config=api.create_host_config(
            mounts=[{"Type": "volume", "Source": volume, "Target": "/home/jovyan"}],
            network_mode="host",
        ),
    )["Id"]
    try:
        api.start(helper)
        files = {"reports/daily.ipynb": _notebook(CELLS), "reports/attack.ipynb": _notebook(ATTACK)}
        links = {"reports/link.ipynb": "daily.ipynb", "elsewhere": "reports"}
        assert api.put_archive(helper, "/home/jovyan", _tar(files, links))
    finally:
        api.remove_container(helper, force=True)
    yield name
    api.remove_volume(volume, force=True)


def request(owner: str, out_dir: Path, mlflow: MlflowServer, **changes: Any) -> dict[str, Any]:
    return {
        "run_id": f"c{uuid.uuid4().hex[:6]}",
        "job_id": 9,
        "job_name": "Container report",
        "owner": owner,
        "notebook": f"/srv/homes/{owner}/reports/daily.ipynb",
        "notebook_label": "reports/daily.ipynb",
        "cwd": f"/srv/homes/{owner}/reports",
        "out_dir": str(out_dir),
        "parameters": {"label": "from-job"},
        "cell_timeout_s": 120,
        "deadline_s": 300,
        "env": {"MLFLOW_TRACKING_URI": mlflow.uri, "MLFLOW_TRACKING_TOKEN": "tok"},
        "mlflow_experiment": f"{owner}/jobs",
        **changes,
    }


def leftovers(api: docker.APIClient, run_id: str) -> list[Any]:
    return api.containers(all=True, filters={"label": f"werkhub.run_id={run_id}"})


def test_job_runs_in_container_with_home_volume(
    api: docker.APIClient,
    podman_api: Path,
    built_images: BuiltImages,
    owner: str,
    mlflow_server: MlflowServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    req = request(owner, tmp_path / "out", mlflow_server)
    outcome = run_in_container(
        req,
        base_url=f"unix://{podman_api}",
        images={"base": built_images.tags["base"]},
        host_network=True,
        mem_limit="1g",
        cpu_limit=1,
        deadline_s=240,
    )
    log = (tmp_path / "out" / "container.log").read_text()
    assert outcome.status == "succeeded", f"{outcome.error}\n{log[-3000:]}"
    out = tmp_path / "out"
    assert outcome.report == str(out / "report.html") and (out / "report.html").exists()
    assert json.loads((out / "result.json").read_text())["status"] == "succeeded"
    text = json.dumps(json.loads((out / "output.ipynb").read_text())["cells"][-1]["outputs"])
    assert "uid 1000 home /home/jovyan cwd /home/jovyan/reports" in text
    assert "devices void" in text and "request env leaked: False" in text
    assert "label from-job" in text
    request_record = json.loads((out / "container-request.json").read_text())
    assert request_record["env"]["MLFLOW_TRACKING_TOKEN"] == "(hidden)"
    page = (out / "report.html").read_text()
    assert "Container report" in page and "cdnjs" not in page
    run = MlflowClient(mlflow_server.uri).get_run(outcome.mlflow_run_id)
    assert run.data.metrics["uid"] == 1000.0
    assert run.data.tags["werkhub.notebook"] == "reports/daily.ipynb"
    assert leftovers(api, req["run_id"]) == []


def test_deadline_stops_container(
    api: docker.APIClient,
    podman_api: Path,
    built_images: BuiltImages,
    owner: str,
    mlflow_server: MlflowServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    req = request(owner, tmp_path / "out", mlflow_server, parameters={"seconds": 600})
    outcome = run_in_container(
        req,
        base_url=f"unix://{podman_api}",
        images={"base": built_images.tags["base"]},
        host_network=True,
        deadline_s=25,
    )
    assert outcome.status == "timed_out"
    assert outcome.error == "the run passed its deadline of 25 s and its container was stopped"
    assert leftovers(api, req["run_id"]) == []


def test_missing_notebook_fails_readably(
    podman_api: Path, built_images: BuiltImages, owner: str, tmp_path: Path
) -> None:
    req = request(owner, tmp_path / "out", MlflowServer("http://127.0.0.1:9", None, tmp_path))  # type: ignore[arg-type]
    req["notebook_label"] = "reports/missing.ipynb"
    outcome = run_in_container(
        req,
        base_url=f"unix://{podman_api}",
        images={"base": built_images.tags["base"]},
        host_network=True,
        deadline_s=120,
    )
    # checked by the service before the container starts, as for a local job
    assert outcome.status == "failed"
    assert outcome.error == ("notebook: 'reports/missing.ipynb' does not exist in your home folder")
    assert not (tmp_path / "out" / "container.log").exists()  # it never ran


def test_containers_of_a_crashed_run_are_ended(
    api: docker.APIClient,
    podman_api: Path,
    built_images: BuiltImages,
    owner: str,
    mlflow_server: MlflowServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """What the scheduler does on start for a run a crashed service left running: its
    container is removed (the run is retried; the old one must not go on writing)."""
    req = request(owner, tmp_path / "out", mlflow_server, parameters={"seconds": 600})
    base_url = f"unix://{podman_api}"
    images = {"base": built_images.tags["base"]}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            run_in_container, req, base_url=base_url, images=images, host_network=True
        )
        deadline = time.monotonic() + 60
        while not leftovers(api, req["run_id"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leftovers(api, req["run_id"]), "the run's container did not start"
        assert end_run_containers(base_url, "other-run") == 0
        assert end_run_containers(base_url, req["run_id"]) == 1
        outcome = running.result(timeout=60)  # the runner notices and reports it
    assert outcome.status == "failed" and "container engine" in (outcome.error or "")
    assert leftovers(api, req["run_id"]) == []


def run_attack(
    owner: str, podman_api: Path, built_images: BuiltImages, out: Path, **changes: Any
) -> Any:
    req = request(owner, out, MlflowServer("http://127.0.0.1:9", None, out), **changes)  # type: ignore[arg-type]
    return run_in_container(
        req,
        base_url=f"unix://{podman_api}",
        images={"base": built_images.tags["base"]},
        host_network=True,
        deadline_s=180,
    )


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"parameters": {"colour": "red"}}, "parameters.colour: the notebook has no parameter"),
        ({"parameters": {"seconds": "ten"}}, "parameters.seconds: expected an integer"),
        ({"notebook_label": "reports/link.ipynb"}, "'reports/link.ipynb' is a symbolic link"),
        ({"notebook_label": "elsewhere/daily.ipynb"}, "'elsewhere' is a symbolic link"),
        ({"notebook_label": "reports"}, "must end in .ipynb"),
    ],
)
def test_home_notebooks_get_the_checks_of_a_local_job_before_the_start(
    podman_api: Path,
    built_images: BuiltImages,
    owner: str,
    tmp_path: Path,
    changes: dict[str, Any],
    words: str,
) -> None:
    outcome = run_attack(owner, podman_api, built_images, tmp_path / "out", **changes)
    assert outcome.status == "failed" and words in (outcome.error or ""), outcome.error
    assert not (tmp_path / "out" / "container.log").exists()  # refused before it started


def test_a_claim_of_success_from_a_killed_runner_is_not_believed(
    api: docker.APIClient,
    podman_api: Path,
    built_images: BuiltImages,
    owner: str,
    tmp_path: Path,
) -> None:
    """The notebook writes a result.json claiming success into its run folder and ends
    the runner before it writes the real one: the exit code says otherwise."""
    run_id = f"c{uuid.uuid4().hex[:6]}"
    folder = container_out_dir({"run_id": run_id})
    outcome = run_attack(
        owner,
        podman_api,
        built_images,
        tmp_path / "out",
        run_id=run_id,
        notebook_label="reports/attack.ipynb",
        parameters={"folder": folder, "mode": "claim"},
    )
    assert outcome.status == "failed", outcome
    assert "exited with 143" in (outcome.error or "")
    assert "result says 'succeeded'" not in (outcome.error or "")  # it never exited 0/1
    assert outcome.report is None and outcome.started.year > 2000
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["status"] == "failed"  # the service's record, not the container's
    claim = json.loads((tmp_path / "out" / "container-result.json").read_text())
    assert claim["status"] == "succeeded"  # kept for the record, never believed
    assert leftovers(api, run_id) == []


def test_output_past_the_cap_fails_the_run_and_is_not_copied(
    podman_api: Path,
    built_images: BuiltImages,
    owner: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(docker_runner, "MAX_COPY_BYTES", 1024 * 1024)
    run_id = f"c{uuid.uuid4().hex[:6]}"
    outcome = run_attack(
        owner,
        podman_api,
        built_images,
        tmp_path / "out",
        run_id=run_id,
        notebook_label="reports/attack.ipynb",
        parameters={"folder": container_out_dir({"run_id": run_id}), "mode": "big"},
    )
    assert outcome.status == "failed"
    assert "larger than 1 MB and was not copied out" in (outcome.error or ""), outcome.error
    out = tmp_path / "out"
    assert not (out / "output.ipynb").exists() and not (out / "big.bin").exists()
