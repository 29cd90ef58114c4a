"""Model endpoints on a real hub: registered MLflow models served by MLflow's own scoring
server in the owner's sandbox, reached through the hub's proxy at /endpoints/.

Who may call (owner, group, endpoint token; strangers 404), bad input, cold starts from
zero with concurrent requests, rollouts under load without a failed request, a broken
version that never takes traffic, GPU endpoints holding a ledger booking, and a restart
that keeps endpoints and tokens.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import Werkhub, running_werkhub
from tests.support.serving import invoke_body, register_tagged, set_alias, wait_state
from tests.support.wait import wait_for

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
L4 = [{"index": i, "model": "L4", "memory_gb": 24} for i in range(2)]
NODES = [{"name": "s1", "devices": L4}]
OWNER, MEMBER, STRANGER = "sv-ann", "sv-ben", "sv-cy"
TEAM = "sv-line"
MODEL = f"{OWNER}~press-quality"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "gpus": {"nodes": NODES, "simulated": True},
        "serving": {"check_seconds": 0.5, "alias_poll_seconds": 1},
    }
    with running_werkhub(tmp_path_factory.mktemp("serving"), extra) as werkhub:
        yield werkhub


@pytest.fixture(scope="module")
def people(hub: Werkhub) -> dict[str, str]:
    tokens = {name: hub.create_user(name) for name in (OWNER, MEMBER, STRANGER)}
    hub.add_to_group(TEAM, [MEMBER])
    return tokens


@pytest.fixture(scope="module")
def versions(
    hub: Werkhub, people: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("models")
    token = people[OWNER]
    return {
        "v1": register_tagged(hub.url, token, OWNER, MODEL, 1, folder, alias="champion"),
        "v2": register_tagged(hub.url, token, OWNER, MODEL, 2, folder),
        "broken": register_tagged(hub.url, token, OWNER, MODEL, 3, folder, broken=True),
    }


def invoke(hub: Werkhub, token: str | None, name: str, owner: str = OWNER, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{hub.url}/endpoints/{owner}/{name}/invocations",
        json=kw.get("body", invoke_body()),
        headers=headers,
        timeout=kw.get("timeout", 60),
    )


def assert_cache_private(cache: Path) -> None:
    """The fetched models are werkhub's alone (the local backend gives each replica its
    own copy in the owner's folder): no file readable, no folder passable by others."""
    entries = [cache, *cache.rglob("*")]
    assert any(p.name == "MLmodel" for p in entries), entries
    loose = [p for p in entries if p.stat().st_mode & 0o077]
    assert loose == [], [(str(p), oct(p.stat().st_mode)) for p in loose]


def deploy(api: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    reply = api.post(f"{API}/endpoints", json={"name": name, "model": MODEL, **fields})
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_owner_group_token_and_stranger(
    hub: Werkhub, people: dict[str, str], versions: dict[str, str]
) -> None:
    with hub.client(people[OWNER]) as api:
        created = deploy(api, "press", groups=[TEAM])
        assert created["url"] == f"/endpoints/{OWNER}/press/invocations"
        ready = wait_state(api, "press", ("ready",))
        assert ready["serving_version"] == versions["v1"]
        assert_cache_private(hub.state / "endpoints" / "models")
        answer = invoke(hub, people[OWNER], "press")
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [1.0, 1.0]
        # the shared group's member may call it; a stranger sees nothing
        assert invoke(hub, people[MEMBER], "press").status_code == 200
        assert invoke(hub, people[STRANGER], "press").status_code == 404
        assert invoke(hub, None, "press").status_code == 401
        assert invoke(hub, "not-a-token", "press").status_code == 401
        with hub.client(people[STRANGER]) as other:
            assert other.get(f"{API}/endpoints/press", params={"owner": OWNER}).status_code == 404
            assert other.get(f"{API}/endpoints").json() == []
        with hub.client(people[MEMBER]) as member:
            seen = member.get(f"{API}/endpoints").json()
            assert [(e["owner"], e["name"]) for e in seen] == [(OWNER, "press")]
            # a member may call, not change
            reply = member.patch(
                f"{API}/endpoints/press", params={"owner": OWNER}, json={"min_replicas": 0}
            )
            assert reply.status_code == 404
        # a payload the model's signature rejects: MLflow's own 4xx message passes through
        bad = invoke(hub, people[OWNER], "press", body={"dataframe_split": {"columns": ["x"]}})
        assert 400 <= bad.status_code < 500, bad.text
        assert "error_code" in bad.json() or "message" in bad.json(), bad.text
        # endpoint tokens: this endpoint only, shown once, revocable
        reply = api.post(f"{API}/endpoints/press/tokens", json={"note": "line 3 camera PC"})
        assert reply.status_code == 201, reply.text
        token = reply.json()["token"]
        assert token.startswith("wep_")
        assert invoke(hub, token, "press").status_code == 200
        listed = api.get(f"{API}/endpoints/press/tokens").json()
        assert [t["note"] for t in listed] == ["line 3 camera PC"]
        assert "token" not in listed[0]
        # nothing else in the hub or the services accepts it
        with hub.client(token) as machine:
            assert machine.get("/hub/api/user").status_code in (401, 403)
            assert machine.get(f"{API}/endpoints").status_code in (401, 403)
            search = machine.get("/services/mlflow/api/2.0/mlflow/experiments/search")
            assert search.status_code in (401, 403)
        reply = api.delete(f"{API}/endpoints/press/tokens/{listed[0]['id']}")
        assert reply.status_code == 200 and reply.json()["revoked"]
        assert invoke(hub, token, "press").status_code == 401


def test_bad_requests_create_nothing(
    hub: Werkhub, people: dict[str, str], versions: dict[str, str]
) -> None:
    with hub.client(people[OWNER]) as api:
        before = api.get(f"{API}/endpoints").json()
        cases = [
            ({"name": "Bad Name", "model": MODEL}, 422),
            ({"name": "nomodel", "model": f"{OWNER}~missing"}, 404),
            ({"name": "noversion", "model": MODEL, "version": "99"}, 422),
            ({"name": "noalias", "model": MODEL, "alias": "gold"}, 422),
            ({"name": "both", "model": MODEL, "alias": "champion", "version": "1"}, 422),
            (
                {
                    "name": "gpu",
                    "model": MODEL,
                    "resources": {"gpu": {"type": "B200", "count": 1}},
                },
                422,
            ),
            ({"name": "toomuch", "model": MODEL, "resources": {"memory": "lots"}}, 422),
            ({"name": "nogroup", "model": MODEL, "groups": ["no-such-group"]}, 422),
        ]
        for body, status in cases:
            reply = api.post(f"{API}/endpoints", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert reply.json()["detail"], reply.text
        # someone else's model: as unknown as a missing one
        with hub.client(people[STRANGER]) as other:
            reply = other.post(f"{API}/endpoints", json={"name": "steal", "model": MODEL})
            assert reply.status_code == 404, reply.text
        assert api.get(f"{API}/endpoints").json() == before


def test_cold_start_answers_every_waiting_request(
    hub: Werkhub, people: dict[str, str], versions: dict[str, str]
) -> None:
    with hub.client(people[OWNER]) as api:
        deploy(api, "cold", min_replicas=0, idle_minutes=1)
        wait_state(api, "cold", ("ready",))
        assert invoke(hub, people[OWNER], "cold").status_code == 200
        # no request for idle_minutes: the server stops
        wait_state(api, "cold", ("scaled_to_zero",), timeout=150)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: invoke(hub, people[OWNER], "cold"), range(8)))
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        assert api.get(f"{API}/endpoints/cold").json()["state"] == "ready"
        assert api.delete(f"{API}/endpoints/cold").status_code == 204


def test_rollout_under_load_and_broken_version(
    hub: Werkhub, people: dict[str, str], versions: dict[str, str]
) -> None:
    with hub.client(people[OWNER]) as api:
        deploy(api, "roll", request_logging=True)
        wait_state(api, "roll", ("ready",))
        seen: list[tuple[int, Any]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    reply = client.post(
                        f"{hub.url}/endpoints/{OWNER}/roll/invocations",
                        json=invoke_body(),
                        headers={"Authorization": f"Bearer {people[OWNER]}"},
                    )
                    body = reply.json() if reply.status_code == 200 else reply.text
                    seen.append((reply.status_code, body))

        workers = [threading.Thread(target=load) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            wait_for(lambda: len(seen) > 10, timeout=60)
            # moving the alias rolls the new version out while requests keep coming
            set_alias(hub.url, people[OWNER], MODEL, "champion", versions["v2"])
            wait_for(
                lambda: (
                    api.get(f"{API}/endpoints/roll").json()["serving_version"] == versions["v2"]
                ),
                timeout=180,
                interval=0.25,
            )
            mark = len(seen)
            wait_for(lambda: len(seen) > mark + 10, timeout=60)
            # a version that cannot load never receives traffic, and the endpoint says why
            reply = api.patch(f"{API}/endpoints/roll", json={"version": versions["broken"]})
            assert reply.status_code == 200, reply.text
            found = wait_for(
                lambda: (e := api.get(f"{API}/endpoints/roll").json())["reason"] and e,
                timeout=180,
                interval=0.25,
            )
            assert f"version {versions['broken']}" in found["reason"], found
            assert found["serving_version"] == versions["v2"]
            assert found["log_tail"], found
            mark = len(seen)
            wait_for(lambda: len(seen) > mark + 5, timeout=60)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        failed = [s for s in seen if s[0] != 200]
        assert not failed, failed[:3]
        answers = {body["predictions"][0] for _, body in seen}
        assert answers == {1.0, 2.0}, answers  # never 3.0: the broken version took nothing
        # figures per minute and the request log
        figures = api.get(f"{API}/endpoints/roll/metrics").json()
        assert sum(f["requests"] for f in figures) >= len(seen) - 10
        assert all(f["errors"] == 0 for f in figures)
        logged = api.get(f"{API}/endpoints/roll/logs").json()
        assert 0 < len(logged) <= 100
        assert logged[0]["caller"] == OWNER and "dataframe_split" in logged[0]["request"]


def scoring_servers(hub: Werkhub) -> set[int]:
    """Scoring server processes of this hub (their model lies in its state folder)."""
    marker = f"__pyfunc_model_path__={(hub.state / 'endpoints' / 'servers').resolve()}"
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ):
            found.add(int(entry.name))
    return found


def test_a_crashed_server_shows_failed_and_restarts(
    hub: Werkhub, people: dict[str, str], versions: dict[str, str]
) -> None:
    with hub.client(people[OWNER]) as api:
        before = scoring_servers(hub)
        deploy(api, "crashy")
        wait_state(api, "crashy", ("ready",))
        mine = scoring_servers(hub) - before
        assert mine, "no scoring server process found"
        for pid in mine:
            os.kill(pid, signal.SIGKILL)
        failed = wait_state(api, "crashy", ("failed",), timeout=60)
        assert "exited" in failed["reason"], failed
        assert failed["log_tail"], failed
        # restarted with back-off, and answering again
        wait_state(api, "crashy", ("ready",), timeout=120)
        assert invoke(hub, people[OWNER], "crashy").status_code == 200
        assert api.delete(f"{API}/endpoints/crashy").status_code == 204


def test_gpu_endpoint_holds_a_booking(
    hub: Werkhub, people: dict[str, str], versions: dict[str, str]
) -> None:
    with hub.client(people[OWNER]) as api:
        deploy(api, "gpu", resources={"cpu": 1, "memory": "1G", "gpu": {"type": "L4", "count": 1}})
        wait_state(api, "gpu", ("ready",))
        bookings = api.get(f"{API}/bookings").json()
        held = [b for b in bookings if b["kind"] == "endpoint" and b["state"] == "active"]
        assert len(held) == 1 and held[0]["count"] == 1 and held[0]["gpu_type"] == "L4", bookings
        assert invoke(hub, people[OWNER], "gpu").status_code == 200
        assert api.delete(f"{API}/endpoints/gpu").status_code == 204
        after = {b["id"]: b for b in api.get(f"{API}/bookings").json()}
        assert after[held[0]["id"]]["state"] in ("released", "ended"), after[held[0]["id"]]


def test_restart_keeps_endpoints_and_tokens(
    tmp_path: Path, people: dict[str, str], versions: dict[str, str], hub: Werkhub
) -> None:
    with hub.client(people[OWNER]) as api:
        deploy(api, "keep")
        wait_state(api, "keep", ("ready",))
        token = api.post(f"{API}/endpoints/keep/tokens", json={"note": "mes"}).json()["token"]
    hub.stop()
    hub.start()
    with hub.client(people[OWNER]) as api:
        wait_state(api, "keep", ("ready",))
        assert invoke(hub, token, "keep").status_code == 200
        assert invoke(hub, people[OWNER], "keep").status_code == 200
        names = {e["name"] for e in api.get(f"{API}/endpoints").json()}
        assert "keep" in names
