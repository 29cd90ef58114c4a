"""MLflow artifacts in an S3-compatible store (``services.mlflow.artifacts_destination:
s3://...`` with an endpoint, a credentials file and a profile).

The store is moto's standalone S3 server on 127.0.0.1 (real S3 over HTTP, the only
S3-compatible server installable on this machine; MinIO and Ceph are not packaged here).
A real ``werkhub up`` runs the gateway and the private MLflow server; the client holds only
a hub token and uploads through the gateway, MLflow's server writes to the bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow.exceptions import MlflowException

from tests.hub.test_mlflow_auth import mlflow_as
from tests.support.hub import Werkhub, free_ports, make_werkhub

boto3 = pytest.importorskip("boto3", reason="boto3 is installed with the hub extra")
pytest.importorskip("moto.server", reason="moto[server] is installed with the dev extra")

pytestmark = pytest.mark.hub

BUCKET = "werkhub-artifacts"
KEY_ID, SECRET = "werkhub-test-key", "werkhub-test-secret"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An S3 server on loopback, a bucket, and a credentials file with a named profile."""
    folder = tmp_path_factory.mktemp("s3")
    (port,) = free_ports(1)
    log = (folder / "s3.log").open("w")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((folder / "s3.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        credentials = folder / "credentials"
        credentials.write_text(
            f"[werkhub]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield {"endpoint": endpoint, "credentials": credentials, "client": client}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def s3_werkhub(tmp_path_factory: pytest.TempPathFactory, s3: dict[str, Any]) -> Iterator[Werkhub]:
    hub = make_werkhub(tmp_path_factory.mktemp("werkhub-s3"))
    data = yaml.safe_load(hub.config.read_text())
    data["services"]["mlflow"].update(
        {
            "artifacts_destination": f"s3://{BUCKET}/mlflow",
            "s3_endpoint_url": s3["endpoint"],
            "s3_credentials_file": str(s3["credentials"]),
            "s3_profile": "werkhub",
        }
    )
    hub.config.write_text(yaml.safe_dump(data))
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    yield hub
    hub.stop()


def test_artifacts_land_in_the_bucket_and_stay_private(
    s3_werkhub: Werkhub, s3: dict[str, Any], tmp_path: Path
) -> None:
    ana, bo = s3_werkhub.create_user("s3-ana"), s3_werkhub.create_user("s3-bo")
    blob = tmp_path / "model.bin"
    blob.write_bytes(os.urandom(2 * 1024 * 1024))
    with mlflow_as(s3_werkhub, ana) as client:
        experiment = client.create_experiment("s3-inspection")
        run = client.create_run(experiment).info.run_id
        client.log_artifact(run, str(blob))
        client.set_terminated(run)
        assert client.get_run(run).info.artifact_uri.startswith("mlflow-artifacts:/")
        back = client.download_artifacts(run, "model.bin", str(tmp_path / "back"))
    assert Path(back).read_bytes() == blob.read_bytes()
    # the object is in the bucket, under the configured prefix; nothing in the state folder
    keys = [o["Key"] for o in s3["client"].list_objects_v2(Bucket=BUCKET)["Contents"]]
    (key,) = [k for k in keys if k.endswith("/model.bin")]
    assert key.startswith(f"mlflow/{experiment}/") and run in key
    stored = s3["client"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored == blob.read_bytes()
    local = s3_werkhub.state / "mlflow" / "artifacts"
    assert not local.exists() or not any(local.rglob("model.bin"))
    # another user cannot read it through the gateway
    with mlflow_as(s3_werkhub, bo) as client, pytest.raises(MlflowException) as info:
        client.download_artifacts(run, "model.bin", str(tmp_path / "stolen"))
    assert "403" in str(info.value)
