"""Endpoint replicas on the Docker backend against podman's Docker API: a scikit-learn model
saved with a signature is served by MLflow's scoring server in the curated base image, on
the host network bound to 127.0.0.1 (tests/TESTBED rule), as jovyan without privileges
and with the model read-only; predictions and MLflow's signature errors come back, and a
stopped replica leaves nothing behind. The Kubernetes init container's fetch of
``models:/NAME/VERSION`` runs in the same image against a real MLflow server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.containers.conftest import BuiltImages
from tests.support.net import free_port, port_open
from tests.support.wait import wait_for
from werkhub.serving.docker import GONE, DockerBackend
from werkhub.serving.manifests import (
    container_config,
    kubernetes_manifests,
    leftover_filters,
    registry_model,
)
from werkhub.serving.replicas import Replica, ReplicaSpec

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
COLUMNS = ["temperature", "vibration"]
ROWS = [[20.0, 0.1], [95.0, 0.9], [25.0, 0.2], [90.0, 0.8]]

SAVE = """
import sys
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

frame = pd.DataFrame({rows!r}, columns={columns!r})
model = LogisticRegression().fit(frame, [0, 1, 0, 1])
signature = infer_signature(frame, model.predict(frame))
# cloudpickle, as the templates log models: the curated image has no skops
options = dict(signature=signature, input_example=frame.head(2), serialization_format="cloudpickle")
if sys.argv[1] == "save":
    mlflow.sklearn.save_model(model, sys.argv[2], **options)
else:
    mlflow.set_tracking_uri(sys.argv[2])
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", registered_model_name="churn", **options)
"""


def save_script(tmp: Path) -> Path:
    script = tmp / "save_model.py"
    script.write_text(SAVE.format(rows=ROWS, columns=COLUMNS))
    return script


def readable(folder: Path) -> Path:
    """The model folder as the container's jovyan reads it (what the supervisor's
    download must look like)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serving-model")
    target = tmp / "model"
    env = {**os.environ, **QUIET}
    subprocess.run(
        [sys.executable, str(save_script(tmp)), "save", str(target)], check=True, env=env
    )
    assert (target / "MLmodel").is_file()
    return readable(target)


@pytest.fixture(scope="module")
def engine_api(podman_api: Path) -> Iterator[docker.APIClient]:
    api = docker.APIClient(base_url=f"unix://{podman_api}", version="auto")
    yield api
    with contextlib.suppress(docker.errors.DockerException):
        for found in api.containers(all=True, filters=leftover_filters()):
            api.remove_container(found["Id"], force=True)
    api.close()


@pytest.fixture(scope="module")
def backend(podman_api: Path, built_images: BuiltImages) -> Iterator[DockerBackend]:
    made = DockerBackend(f"unix://{podman_api}", built_images.tags["base"], host_network=True)
    yield made
    made.close()


def spec_for(model_dir: Path, tmp: Path, **changes: Any) -> ReplicaSpec:
    spec = ReplicaSpec(
        endpoint_id=11,
        owner="anna-b",
        name="churn",
        version="1",
        model_dir=model_dir,
        port=free_port(),
        workdir=tmp,
        cpu=1.0,
        memory="1G",
    )
    return replace(spec, **changes)


def wait_ready(backend: DockerBackend, replica: Replica, timeout: float = 120) -> float:
    """Seconds until ``/ping`` answers 200; fails with the log when the server exits."""
    began = time.monotonic()

    def ready() -> bool:
        code = asyncio.run(backend.exited(replica))
        assert code is None, f"exited with {code}:\n{backend.log_tail(replica, 60)}"
        try:
            return httpx.get(f"{replica.url}/ping", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=timeout, interval=0.25, what=f"{replica.url}/ping")
    return time.monotonic() - began


def in_container(api: docker.APIClient, container: str, code: str) -> str:
    run = api.exec_create(container, ["python", "-c", code])
    output = api.exec_start(run["Id"]).decode()
    assert api.exec_inspect(run["Id"])["ExitCode"] == 0, output
    return output


PROBE = """
import json, os
status = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    status[pid] = {k: fields[k].split() for k in ("Uid", "CapEff", "NoNewPrivs")}
try:
    open("/model/written", "w")
    model = "writable"
except OSError as exc:
    model = exc.strerror
try:
    open("/opt/venv/written", "w")
    root = "writable"
except OSError as exc:
    root = exc.strerror
open("/tmp/scratch", "w").write("ok")
print(json.dumps({"processes": status, "model": model, "root": root}))
"""


def test_replica_serves_the_model_unprivileged(
    backend: DockerBackend,
    engine_api: docker.APIClient,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    spec = spec_for(model_dir, tmp_path)
    replica = asyncio.run(backend.start(spec))
    try:
        took = wait_ready(backend, replica)
        print(f"scoring server ready in {took:.1f} s")
        assert replica.url == f"http://127.0.0.1:{spec.port}"
        assert asyncio.run(backend.exited(replica)) is None

        split = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
        answer = httpx.post(f"{replica.url}/invocations", json=split, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [0, 1, 0, 1]}

        # the signature wants both columns: MLflow's own 400 and message come through
        missing = {"dataframe_split": {"columns": ["temperature"], "data": [[20.0]]}}
        refused = httpx.post(f"{replica.url}/invocations", json=missing, timeout=30)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "missing inputs ['vibration']" in refused.json()["message"]
        wrong = {"dataframe_split": {"columns": COLUMNS, "data": [["hot", "x"]]}}
        refused = httpx.post(f"{replica.url}/invocations", json=wrong, timeout=30)
        assert refused.status_code == 400 and "float64" in refused.json()["message"]

        inspected = engine_api.inspect_container(replica.handle)
        assert inspected["Config"]["User"] == "1000:100"
        assert inspected["Config"]["Labels"]["werkhub.owner"] == "anna-b"
        assert inspected["Config"]["Labels"]["werkhub.endpoint_id"] == "11"
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        (mount,) = [m for m in inspected["Mounts"] if m["Destination"] == "/model"]
        assert mount["RW"] is False and mount["Source"] == str(model_dir)
        assert inspected["HostConfig"]["Memory"] == 1024**3
        assert inspected["HostConfig"]["NanoCpus"] == 10**9

        seen = json.loads(in_container(engine_api, replica.handle, PROBE))
        assert seen["model"] == "Read-only file system"
        assert seen["root"] == "Read-only file system"
        assert not (model_dir / "written").exists()
        for pid, status in seen["processes"].items():
            assert set(status["Uid"]) == {"1000"}, (pid, status)  # init and server alike
            assert int(status["CapEff"][0], 16) == 0, (pid, status)
            assert status["NoNewPrivs"] == ["1"], (pid, status)

        assert "Uvicorn running on http://127.0.0.1" in backend.log_tail(replica)
    finally:
        asyncio.run(backend.stop(replica, grace=5))
    with pytest.raises(docker.errors.NotFound):
        engine_api.inspect_container(replica.handle)
    assert asyncio.run(backend.exited(replica)) == GONE
    assert not port_open(spec.port)
    asyncio.run(backend.stop(replica))  # stopping twice is fine


def test_a_model_that_cannot_load_exits_with_its_reason(
    backend: DockerBackend, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir(mode=0o755)
    replica = asyncio.run(backend.start(spec_for(empty, tmp_path, name="broken")))
    try:
        code = wait_for(
            lambda: asyncio.run(backend.exited(replica)),
            timeout=90,
            interval=0.25,
            what="the broken replica to exit",
        )
        assert code not in (0, GONE)
        assert "MLmodel" in backend.log_tail(replica, 60)
    finally:
        asyncio.run(backend.stop(replica))


def test_leftovers_are_found_by_their_labels(
    backend: DockerBackend,
    engine_api: docker.APIClient,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    """A restarted werkhub removes its endpoint containers: one owner's, then all."""
    first = asyncio.run(backend.start(spec_for(model_dir, tmp_path, owner="zoe")))
    second = asyncio.run(backend.start(spec_for(model_dir, tmp_path, endpoint_id=12)))
    try:
        assert asyncio.run(backend.remove_leftovers("zoe")) == 1
        with pytest.raises(docker.errors.NotFound):
            engine_api.inspect_container(first.handle)
        assert engine_api.inspect_container(second.handle)["State"]["Running"]
        assert asyncio.run(backend.remove_leftovers()) >= 1
        assert engine_api.containers(all=True, filters=leftover_filters()) == []
    finally:
        for replica in (first, second):
            asyncio.run(backend.stop(replica, grace=1))


# ---- the Kubernetes init container's fetch, in the curated image --------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking server on 127.0.0.1 that proxies its artifacts, with version 1
    of the registered model ``churn``."""
    tmp = tmp_path_factory.mktemp("serving-mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **QUIET, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{tmp}/mlflow.db"),
        *("--artifacts-destination", str(tmp / "artifacts")),
    ]
    with (tmp / "server.log").open("wb") as log:
        # its own process group: the uvicorn it starts goes with it
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: port_open(port), timeout=90, interval=0.25, what="mlflow server")
        subprocess.run(
            [sys.executable, str(save_script(tmp)), "log", url], check=True, env=env, timeout=120
        )
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_init_container_fetches_the_registered_version(
    backend: DockerBackend,
    engine_api: docker.APIClient,
    built_images: BuiltImages,
    mlflow_server: str,
    tmp_path: Path,
) -> None:
    """The Deployment's ``fetch-model`` container (command, environment, security) run
    as a container of the same image: the version lands in the model folder, and a
    replica serves what it fetched."""
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    fetched.chmod(0o777)  # the emptyDir of the pod, writable by jovyan
    spec = spec_for(fetched, tmp_path, endpoint_id=13)
    image = built_images.tags["base"]
    objects = kubernetes_manifests(spec, image, registry_model(spec, mlflow_server, "tok"))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    env = [f"{e['name']}={e.get('value', 'secret-token')}" for e in init["env"]]
    # the same sandbox as a replica's container: jovyan, no capabilities, read-only root
    config = container_config(spec, image, host_network=True)
    host = config["HostConfig"]
    host["Mounts"][0]["ReadOnly"] = False
    fetch = {
        "Image": image,
        "Cmd": init["command"],
        "Env": env,
        "User": config["User"],
        "Labels": config["Labels"],
        "Healthcheck": config["Healthcheck"],
        "HostConfig": host,
    }
    container = engine_api.create_container_from_config(fetch, "werkhub-test-fetch-model")["Id"]
    try:
        engine_api.start(container)
        status = engine_api.wait(container, timeout=180)["StatusCode"]
        logs = engine_api.logs(container).decode()
        assert status == 0, logs
        assert "fetched models:/churn/1" in logs
    finally:
        engine_api.remove_container(container, force=True)
    assert (fetched / "MLmodel").is_file()

    replica = asyncio.run(backend.start(replace(spec, model_dir=readable(fetched))))
    try:
        wait_ready(backend, replica)
        split = {"dataframe_split": {"columns": COLUMNS, "data": ROWS[:2]}}
        answer = httpx.post(f"{replica.url}/invocations", json=split, timeout=30)
        assert answer.json() == {"predictions": [0, 1]}, answer.text
    finally:
        asyncio.run(backend.stop(replica))
