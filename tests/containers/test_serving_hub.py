"""Model endpoints on the Docker backend through podman's Docker API and a real werkhub:
the scoring server runs in a container of the curated image (non-root), is reached through
the hub's proxy with the owner's token, and its container goes with the endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.containers.conftest import BuiltImages
from tests.support.hub import Werkhub, running_werkhub
from tests.support.serving import invoke_body, register_tagged, wait_state
from tests.support.wait import wait_for

API = "/services/werkhub/api"
OWNER = "dk-ann"


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, podman_api: Path, built_images: BuiltImages
) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "serving": {"check_seconds": 0.5, "image": "base"},
        "spawner": {
            "kind": "docker",
            "start_timeout": 120,
            "images": {"base": {"image": built_images.tags["base"]}},
            "docker": {"url": f"unix://{podman_api}", "loopback_host_network": True},
        },
    }
    with running_werkhub(tmp_path_factory.mktemp("serving-docker"), extra) as werkhub:
        yield werkhub


def endpoint_containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={"label": "werkhub.endpoint_id"})


def test_endpoint_runs_in_a_container_of_the_curated_image(
    hub: Werkhub, podman_api: Path, built_images: BuiltImages, tmp_path: Path
) -> None:
    token = hub.create_user(OWNER)
    model = f"{OWNER}~pump-health"
    register_tagged(hub.url, token, OWNER, model, 7, tmp_path, alias="champion")
    client = docker.DockerClient(base_url=f"unix://{podman_api}")
    try:
        with hub.client(token) as api:
            reply = api.post(f"{API}/endpoints", json={"name": "pump", "model": model})
            assert reply.status_code == 201, reply.text
            wait_state(api, "pump", ("ready",), timeout=240)
            answer = httpx.post(
                f"{hub.url}/endpoints/{OWNER}/pump/invocations",
                json=invoke_body(),
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == [7.0, 7.0]
            (found,) = endpoint_containers(client)
            info = client.api.inspect_container(found.id)
            assert info["Config"]["Image"].endswith(built_images.tags["base"])
            assert info["Config"]["User"].split(":")[0] == "1000"
            assert info["HostConfig"]["ReadonlyRootfs"] is True
            assert info["Config"]["Labels"]["werkhub.owner"] == OWNER
            assert api.delete(f"{API}/endpoints/pump").status_code == 204
            wait_for(lambda: not endpoint_containers(client), timeout=60, interval=0.5)
    finally:
        client.close()
