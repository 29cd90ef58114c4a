"""Spawning enforces bookings (local backend, simulated GPUs): exactly the booked devices,
none without a booking, untrusted options refused with 400 before anything starts."""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.hub import Werkhub, server_env

pytestmark = pytest.mark.hub
_names = itertools.count()
API = "/services/werkhub/api"


def spawn(hub: Werkhub, name: str, token: str, options: dict | None) -> httpx.Response:
    with hub.client(token) as api:
        reply = api.post(f"/hub/api/users/{name}/server", json=options)
    if reply.status_code in (201, 202):
        hub.spawn(name, token)  # wait until ready
    return reply


def refused(hub: Werkhub, name: str, token: str, options: dict) -> tuple[int, str]:
    """Spawn with options that must fail; return (status, message).

    On a loaded machine the hub may answer 202 before the refusal lands (its
    slow_spawn_timeout); then the failure is read from the progress stream."""
    with hub.client(token) as api:
        reply = api.post(f"/hub/api/users/{name}/server", json=options)
        if reply.status_code != 202:
            return reply.status_code, reply.json()["message"]
        stream = api.get(f"/hub/api/users/{name}/server/progress", timeout=120).text
    assert '"failed": true' in stream, stream
    return 202, stream


def test_booking_gives_exactly_its_devices(werkhub: Werkhub) -> None:
    token = werkhub.create_user("gina")
    with werkhub.client(token) as api:
        booked = api.post(
            f"{API}/bookings",
            json={"gpu_type": "H100", "count": 2, "start": "now", "duration_minutes": 60},
        )
        assert booked.status_code == 201, booked.text
    replies: list[httpx.Response] = []

    def start() -> None:
        with werkhub.client(token) as api:
            replies.append(api.post("/hub/api/users/gina/server", json={"gpu": "booking"}))

    starter = threading.Thread(target=start)
    starter.start()
    events = ""
    with werkhub.client(token) as api:
        while starter.is_alive() and "Booking" not in events:
            reply = api.get("/hub/api/users/gina/server/progress", timeout=60)
            events += reply.text if reply.status_code == 200 else ""
    starter.join()
    assert replies[0].status_code in (201, 202), replies[0].text
    assert "Checking your GPU booking" in events
    assert "Booking 2 x H100 until" in events and "simulated GPUs" in events
    werkhub.spawn("gina", token)
    env = server_env(werkhub, "gina")
    # the demo inventory is simulated: the server is told its units, but no real device
    # ids reach CUDA (exact pinning of real devices: tests/unit/test_gpu_builders.py)
    assert env["WERKHUB_GPU_UNITS"] == "demo/0,demo/1" and env["WERKHUB_GPU_SIMULATED"] == "1"
    assert env["WERKHUB_BOOKING_ID"] == str(booked.json()["id"])
    assert env["WERKHUB_GPU_COUNT"] == "2" and env["CUDA_VISIBLE_DEVICES"] == ""
    with werkhub.client(token) as api:
        assert api.get(f"{API}/bookings/{booked.json()['id']}").json()["state"] == "active"
    werkhub.stop_server("gina", token)


def test_no_booking_means_no_gpu(werkhub: Werkhub) -> None:
    token = werkhub.create_user("hans")
    status, message = refused(werkhub, "hans", token, {"gpu": "booking"})
    assert status in (409, 202) and "no GPU booking running now" in message
    with werkhub.client(token) as api:
        assert api.get("/hub/api/users/hans").json()["servers"] == {}
    assert spawn(werkhub, "hans", token, {}).status_code in (201, 202)  # auto: CPU only
    env = server_env(werkhub, "hans")
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["WERKHUB_GPU_COUNT"] == "0" and "WERKHUB_BOOKING_ID" not in env
    werkhub.stop_server("hans", token)


def test_on_demand_books_through_the_service(werkhub: Werkhub) -> None:
    token = werkhub.create_user("ida")
    options = {"gpu": "on_demand", "gpu_type": "L40S", "count": 1, "duration_minutes": 30}
    assert spawn(werkhub, "ida", token, options).status_code in (201, 202)
    assert server_env(werkhub, "ida")["WERKHUB_GPU_UNITS"] == "demo/2"
    with werkhub.client(token) as api:
        (mine,) = api.get(f"{API}/bookings").json()
    assert mine["gpu_type"] == "L40S" and mine["state"] == "active"
    werkhub.stop_server("ida", token)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image": "evil/latest"}, "not in the curated catalog"),
        ({"gpu": "all"}, "gpu: Input should be"),
        ({"gpu": "booking", "count": "x"}, "count"),
        ({"privileged": True}, "unknown option"),
        ({"gpu": "on_demand"}, "need a gpu_type"),
        ({"gpu": "on_demand", "gpu_type": "H100", "count": 9}, "fit on one node"),
        ({"gpu": "booking", "booking_id": 1}, "not yours or not running"),
    ],
)
def test_bad_options_are_refused_before_start(
    werkhub: Werkhub, options: dict, message: str
) -> None:
    name = f"jan{next(_names)}"
    token = werkhub.create_user(name)
    status, text = refused(werkhub, name, token, options)
    assert status in (400, 403, 409, 202) and message in text, text
    with werkhub.client(token) as api:
        assert api.get(f"/hub/api/users/{name}").json()["servers"] == {}
    assert not any(server_env_safe(werkhub, name)), (
        "a server process was started for refused options"
    )


def server_env_safe(werkhub: Werkhub, name: str) -> list[str]:
    try:
        return [server_env(werkhub, name)["JUPYTERHUB_USER"]]
    except AssertionError:
        return []


def test_booking_end_downgrades_to_cpu_keeping_files(fresh_werkhub: Werkhub) -> None:
    """end_action downgrade: when the booking ends the server restarts CPU-only, same files."""
    from tests.support.hub import write_config

    hub = fresh_werkhub
    hub.ports = write_config(
        hub.config, {"booking": {"tick_seconds": 1, "end_action": "downgrade", "warn_minutes": 1}}
    )
    hub.url = f"http://127.0.0.1:{hub.ports['public']}"
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    token = hub.create_user("kai")
    with hub.client(token) as api:
        booked = api.post(
            f"{API}/bookings",
            json={"gpu_type": "L40S", "count": 1, "start": "now", "duration_minutes": 1},
        )
        assert booked.status_code == 201, booked.text
    assert spawn(hub, "kai", token, {"gpu": "booking"}).status_code in (201, 202)
    first = server_env(hub, "kai")
    assert first["WERKHUB_BOOKING_ID"] == str(booked.json()["id"])
    with hub.client(token) as api:
        api.put(
            "/user/kai/api/contents/work.txt",
            json={"type": "file", "format": "text", "content": "unsaved? no: saved"},
        )
    deadline = time.monotonic() + 150
    env = first
    while time.monotonic() < deadline:
        try:
            env = server_env(hub, "kai")
        except AssertionError:
            env = {}
        if env.get("WERKHUB_GPU_COUNT") == "0":
            break
        time.sleep(1)
    assert env.get("WERKHUB_GPU_COUNT") == "0", "server was not restarted without GPUs"
    hub.spawn("kai", token)  # ready again
    with hub.client(token) as api:
        assert api.get("/user/kai/api/contents/work.txt").json()["content"] == "unsaved? no: saved"
        state = api.get(f"{API}/bookings/{booked.json()['id']}").json()["state"]
        kinds = [n["kind"] for n in api.get(f"{API}/notifications").json()]
    assert state == "ended" and "booking_ending" in kinds


def test_a_refused_spawn_does_not_block_the_next_one(werkhub: Werkhub) -> None:
    """After refused options the same user spawns normally at once (no stale spawn state)."""
    name = f"jan{next(_names)}"
    token = werkhub.create_user(name)
    for _ in range(2):
        status, _text = refused(werkhub, name, token, {"image": "no/such:image"})
        assert status in (400, 202)
        reply = spawn(werkhub, name, token, {})
        assert reply.status_code in (201, 202), reply.text
        assert server_env(werkhub, name)["JUPYTERHUB_USER"] == name
        with werkhub.client(token) as api:
            server = api.get(f"/hub/api/users/{name}").json()["servers"][""]
        assert server["ready"] is True
        werkhub.stop_server(name, token)


def process_env(hub: Werkhub, marker: str, key: str) -> dict[str, str]:
    """Environment of the process under the state folder whose command line has ``marker``
    and whose environment has ``key``."""
    state = str(hub.state.resolve())
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if marker not in cmdline or not os.readlink(entry / "cwd").startswith(state):
                continue
            raw = (entry / "environ").read_bytes().decode()
        except (OSError, NotADirectoryError):
            continue
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if key in env:
            return env
    raise AssertionError(f"no process {marker!r} with {key} in {state}")


def test_spawn_endpoints_answer_only_the_hubs_spawner(werkhub: Werkhub) -> None:
    """The service knows the spawner's token by its digest only (it never sees the token),
    and nobody else may decide which GPUs a server gets."""
    secret = process_env(werkhub, "jupyterhub", "WERKHUB_SPAWNER_TOKEN")["WERKHUB_SPAWNER_TOKEN"]
    service = process_env(werkhub, "werkhub.service.app", "WERKHUB_SPAWNER_TOKEN_SHA256")
    assert service["WERKHUB_SPAWNER_TOKEN_SHA256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in service.values()
    name = f"guard{next(_names)}"
    token = werkhub.create_user(name)
    body = {"user": name, "gpu": "cpu"}
    for auth, status, words in (
        (token, 403, "only the hub's spawner"),
        (secrets.token_hex(32), 401, "does not know this token"),
        (secret[:-1] + ("0" if secret[-1] != "0" else "1"), 401, "does not know this token"),
    ):
        with werkhub.client(auth) as api:
            reply = api.post(f"{API}/spawn/prepare", json=body)
        assert reply.status_code == status and words in reply.text, reply.text
    with werkhub.client(secret) as api:
        reply = api.post(f"{API}/spawn/prepare", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["devices"] == []
