"""DockerSpawner on podman's Docker API through a real werkhub: each container carries
exactly its booking's devices, limits and home volume; CPU servers get none; homes persist;
a booking's end downgrades the container to CPU with the same home; bad options create
nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.containers.conftest import BuiltImages
from tests.support.hub import Werkhub, make_werkhub

API = "/services/werkhub/api"
NODE = {
    "name": "n1",
    "devices": [
        {"index": 0, "uuid": "GPU-00000000-aaaa", "model": "H100", "memory_gb": 80},
        {"index": 1, "uuid": "GPU-11111111-bbbb", "model": "H100", "memory_gb": 80},
    ],
}


@pytest.fixture(scope="module")
def client(podman_api: Path) -> Iterator[docker.DockerClient]:
    api = docker.DockerClient(base_url=f"unix://{podman_api}")
    yield api
    api.close()


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, podman_api: Path, built_images: BuiltImages
) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "gpus": {"nodes": [NODE]},
        "services": {"mlflow": {"enabled": False}},
        # bookings in the other tests last an hour; the downgrade test books one minute
        "booking": {"tick_seconds": 1, "end_action": "downgrade", "warn_minutes": 1},
        "spawner": {
            "kind": "docker",
            "start_timeout": 120,
            "images": {
                "base": {"image": built_images.tags["base"], "mem_limit": "768M", "cpu_limit": 1}
            },
            "docker": {"url": f"unix://{podman_api}", "loopback_host_network": True},
        },
    }
    werkhub = make_werkhub(tmp_path_factory.mktemp("docker-hub"), extra)
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


def container(client: docker.DockerClient, name: str) -> dict[str, Any]:
    try:
        return client.api.inspect_container(f"jupyter-{name}")
    except docker.errors.APIError as error:
        # podman answers 500 "no such container" for a container that is being
        # removed (its name still resolves, its record is gone): that is "gone".
        gone = error.response is not None and error.response.status_code == 500
        if gone and "no such container" in str(error.explanation or ""):
            raise docker.errors.NotFound(str(error), response=error.response) from error
        raise


def env_of(info: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in info["Config"]["Env"])


def spawn(hub: Werkhub, name: str, token: str, options: dict[str, Any]) -> int:
    with hub.client(token) as api:
        reply = api.post(f"/hub/api/users/{name}/server", json=options, timeout=180)
    if reply.status_code in (201, 202):
        hub.spawn(name, token, timeout=180)
    return reply.status_code


def test_two_bookings_get_exactly_their_devices(hub: Werkhub, client: docker.DockerClient) -> None:
    tokens = {name: hub.create_user(name) for name in ("anna", "bert")}
    booked = {}
    for name, token in tokens.items():
        with hub.client(token) as api:
            reply = api.post(
                f"{API}/bookings",
                json={"gpu_type": "H100", "count": 1, "start": "now", "duration_minutes": 60},
            )
            assert reply.status_code == 201, reply.text
            booked[name] = reply.json()
        assert spawn(hub, name, token, {"gpu": "booking", "image": "base"}) in (201, 202)
    uuids = {d["uuid"] for d in NODE["devices"]}
    seen = set()
    for name in tokens:
        info = container(client, name)
        env = env_of(info)
        (unit,) = booked[name]["devices"]
        index = int(unit.split("/")[1])
        own = NODE["devices"][index]["uuid"]
        assert env["NVIDIA_VISIBLE_DEVICES"] == own
        assert info["Config"]["Labels"]["werkhub.devices"] == own
        assert info["Config"]["Labels"]["werkhub.booking"] == str(booked[name]["id"])
        seen.add(own)
        host = info["HostConfig"]
        assert host["Memory"] == 768 * 1024**2
        assert host["CpuQuota"] == 100_000 and host["CpuPeriod"] == 100_000
        assert host["Privileged"] is False
        assert info["Config"]["User"] == "1000:100"
        volumes = [m for m in info["Mounts"] if m["Type"] == "volume"]
        assert [(m["Name"], m["Destination"]) for m in volumes] == [
            (f"werkhub-home-{name}", "/home/jovyan")
        ]  # no other user's volume is mounted
    assert seen == uuids
    for name, token in tokens.items():
        hub.stop_server(name, token)
        with hub.client(token) as api:  # give the GPUs back for the other tests
            reply = api.post(f"{API}/bookings/{booked[name]['id']}/release")
            assert reply.status_code == 200, reply.text


def test_cpu_server_has_no_devices_and_home_persists(
    hub: Werkhub, client: docker.DockerClient
) -> None:
    token = hub.create_user("cora")
    assert spawn(hub, "cora", token, {"image": "base"}) in (201, 202)
    info = container(client, "cora")
    env = env_of(info)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert info["Config"]["Labels"]["werkhub.devices"] == ""
    with hub.client(token) as api:
        reply = api.put(
            "/user/cora/api/contents/notes.txt",
            json={"type": "file", "format": "text", "content": "kept"},
        )
        assert reply.status_code in (200, 201), reply.text
    hub.stop_server("cora", token)
    assert spawn(hub, "cora", token, {"image": "base"}) in (201, 202)
    with hub.client(token) as api:
        assert api.get("/user/cora/api/contents/notes.txt").json()["content"] == "kept"
    hub.stop_server("cora", token)


def test_deleting_a_user_removes_their_home_volume_only(
    hub: Werkhub, client: docker.DockerClient
) -> None:
    """The purge of a deleted user removes their named home volume (escaped as DockerSpawner
    names it), and no one else's."""
    for name in ("fi-nn", "gus"):
        hub.create_user(name)
        client.volumes.create(f"werkhub-home-{name.replace('-', '-2d')}")
    try:
        with hub.admin() as api:
            gone = api.delete("/hub/api/users/fi-nn")
            assert gone.status_code == 204, gone.text
        names = {v.name for v in client.volumes.list()}
        assert "werkhub-home-fi-2dnn" not in names
        assert "werkhub-home-gus" in names
    finally:
        for volume in client.volumes.list():
            if volume.name in ("werkhub-home-fi-2dnn", "werkhub-home-gus"):
                volume.remove(force=True)


def test_bad_options_create_no_container(hub: Werkhub, client: docker.DockerClient) -> None:
    token = hub.create_user("dora")
    for options in (
        {"image": "evil/latest"},
        {"gpu": "booking", "image": "base"},
        {"image": "base", "privileged": True},
    ):
        with hub.client(token) as api:
            reply = api.post("/hub/api/users/dora/server", json=options, timeout=120)
        assert reply.status_code in (400, 409), reply.text
        names = [c.name for c in client.containers.list(all=True)]
        assert "jupyter-dora" not in names


def test_booking_end_downgrades_container_keeping_home(
    hub: Werkhub, client: docker.DockerClient
) -> None:
    token = hub.create_user("emil")
    with hub.client(token) as api:
        reply = api.post(
            f"{API}/bookings",
            json={"gpu_type": "H100", "count": 1, "start": "now", "duration_minutes": 1},
        )
        assert reply.status_code == 201, reply.text
        booking = reply.json()
    assert spawn(hub, "emil", token, {"gpu": "booking", "image": "base"}) in (201, 202)
    first = container(client, "emil")
    assert first["Config"]["Labels"]["werkhub.booking"] == str(booking["id"])
    assert env_of(first)["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
    with hub.client(token) as api:
        reply = api.put(
            "/user/emil/api/contents/model.txt",
            json={"type": "file", "format": "text", "content": "trained on the GPU"},
        )
        assert reply.status_code in (200, 201), reply.text
    deadline = time.monotonic() + 180
    info: dict[str, Any] = first
    while time.monotonic() < deadline:
        try:
            info = container(client, "emil")
        except docker.errors.NotFound:
            info = {}  # between the stop and the CPU-only start
        if info and info["Id"] != first["Id"] and info["State"]["Running"]:
            break
        time.sleep(1)
    if not (info and info["Id"] != first["Id"]):
        with hub.client(token) as api:
            seen = api.get(f"{API}/bookings/{booking['id']}").text
        said = [ln for ln in hub.output if "emil" in ln or "werkhub." in ln]
        raise AssertionError(
            f"the server was not restarted at the booking end; booking now {seen}; "
            "the hub and service said:\n" + "".join(said[-80:])
        )
    env = env_of(info)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert info["Config"]["Labels"]["werkhub.devices"] == ""
    assert info["Config"]["Image"] == first["Config"]["Image"]  # same image
    volumes = [(m["Name"], m["Destination"]) for m in info["Mounts"] if m["Type"] == "volume"]
    assert volumes == [("werkhub-home-emil", "/home/jovyan")]
    hub.spawn("emil", token, timeout=180)  # ready again
    with hub.client(token) as api:
        kept = api.get("/user/emil/api/contents/model.txt").json()["content"]
        state = api.get(f"{API}/bookings/{booking['id']}").json()["state"]
        kinds = [n["kind"] for n in api.get(f"{API}/notifications").json()]
    assert kept == "trained on the GPU"
    assert state == "ended" and "booking_ending" in kinds
    hub.stop_server("emil", token)
