"""MLflow per user: hub login in front of MLflow's own permission model.

A real ``werkhub up`` (hub, proxy, gateway, private MLflow server with the basic-auth
app); clients are the real MLflow Python client holding nothing but a hub token.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.support.hub import Werkhub, server_env
from tests.support.mlflow_env import mlflow_env

pytestmark = pytest.mark.hub

GROUP = "ml-quality"
API = "/services/mlflow/api/2.0/mlflow"
SHARE = "/services/werkhub/api/experiments"


def mlflow_as(hub: Werkhub, token: str) -> AbstractContextManager[MlflowClient]:
    """The MLflow client configured only through the environment, as jobs and servers are."""
    return mlflow_env(hub.url, token)


def denied(call: Any, *args: Any) -> str:
    with pytest.raises(MlflowException) as info:
        call(*args)
    assert "403" in str(info.value), str(info.value)[:300]
    return str(info.value)


@pytest.fixture(scope="module")
def people(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in ("ana", "ben", "cleo")}
    werkhub.add_to_group(GROUP, ["ben"])
    return tokens


@pytest.fixture(scope="module")
def ana_run(werkhub: Werkhub, people: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """Ana logs an experiment, a run and a 3 MB artifact with only her hub token."""
    folder = tmp_path_factory.mktemp("artifacts")
    blob = folder / "weights.bin"
    blob.write_bytes(os.urandom(3 * 1024 * 1024))
    with mlflow_as(werkhub, people["ana"]) as client:
        experiment = client.create_experiment("ana-inspection")
        run = client.create_run(experiment)
        client.log_param(run.info.run_id, "threshold", "0.7")
        client.log_metric(run.info.run_id, "accuracy", 0.93)
        client.log_artifact(run.info.run_id, str(blob))
        client.set_terminated(run.info.run_id)
    return {"experiment": experiment, "run": run.info.run_id, "blob": blob.read_bytes()}


def test_owner_logs_and_reads_back_with_hub_token_only(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict, tmp_path: Path
) -> None:
    with mlflow_as(werkhub, people["ana"]) as client:
        run = client.get_run(ana_run["run"])
        assert run.data.params == {"threshold": "0.7"}
        assert run.data.metrics == {"accuracy": 0.93}
        found = client.search_experiments(filter_string="name = 'ana-inspection'")
        assert [e.experiment_id for e in found] == [ana_run["experiment"]]
        path = client.download_artifacts(ana_run["run"], "weights.bin", str(tmp_path))
    assert Path(path).read_bytes() == ana_run["blob"]


def test_other_user_gets_403_and_does_not_see_it(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict, tmp_path: Path
) -> None:
    experiment, run_id = ana_run["experiment"], ana_run["run"]
    with mlflow_as(werkhub, people["cleo"]) as client:
        denied(client.get_experiment, experiment)
        denied(client.get_run, run_id)
        denied(client.create_run, experiment)
        denied(client.log_metric, run_id, "accuracy", 0.1)
        denied(client.download_artifacts, run_id, "weights.bin", str(tmp_path))
        names = [e.name for e in client.search_experiments()]
        assert "ana-inspection" not in names
        assert names == []  # not even the Default experiment
        mine = client.create_experiment("cleo-own")
        assert client.get_experiment(mine).name == "cleo-own"
    with werkhub.client(people["cleo"]) as api:
        reply = api.get(f"{API}/experiments/get", params={"experiment_id": experiment})
        assert reply.status_code == 403
        assert "www-authenticate" not in reply.headers  # no browser password dialog


def test_admin_sees_all(werkhub: Werkhub, people: dict[str, str], ana_run: dict) -> None:
    with mlflow_as(werkhub, werkhub.admin_token) as client:
        names = {e.name for e in client.search_experiments()}
        assert {"ana-inspection", "cleo-own", "Default"} <= names
        assert client.get_run(ana_run["run"]).data.metrics == {"accuracy": 0.93}


def test_share_with_group_gives_read_not_write(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict, tmp_path: Path
) -> None:
    experiment, run_id = ana_run["experiment"], ana_run["run"]
    url = f"{SHARE}/{experiment}/share"
    with werkhub.client(people["ben"]) as ben:
        # not the owner: ben cannot see it, so he is told nothing exists
        reply = ben.post(url, json={"group": GROUP, "permission": "READ"})
        assert reply.status_code == 404, reply.text
    with werkhub.client(people["ana"]) as ana:
        bad = ana.post(url, json={"group": "no-such-group", "permission": "READ"})
        assert bad.status_code == 422 and "no-such-group" in bad.json()["detail"]
        bad = ana.post(url, json={"group": GROUP, "permission": "OWNER"})
        assert bad.status_code == 422 and "permission" in bad.json()["detail"]
        bad = ana.post(f"{SHARE}/abc/share", json={"group": GROUP})
        assert bad.status_code == 422 and "experiment_id" in bad.json()["detail"]
        gone = ana.post(f"{SHARE}/987654/share", json={"group": GROUP})
        assert gone.status_code == 404
        reply = ana.post(url, json={"group": GROUP, "permission": "READ"})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "experiment_id": experiment,
            "name": "ana-inspection",
            "shares": {GROUP: "READ"},
        }
    with mlflow_as(werkhub, people["ben"]) as client:
        assert client.get_experiment(experiment).name == "ana-inspection"
        assert client.get_run(run_id).data.metrics == {"accuracy": 0.93}
        assert "ana-inspection" in [e.name for e in client.search_experiments()]
        path = client.download_artifacts(run_id, "weights.bin", str(tmp_path))
        assert Path(path).read_bytes() == ana_run["blob"]
        denied(client.create_run, experiment)  # READ is not EDIT
        denied(client.log_metric, run_id, "accuracy", 0.2)
    with werkhub.client(people["ben"]) as ben:
        # a reader may not re-share
        reply = ben.post(url, json={"group": GROUP, "permission": "EDIT"})
        assert reply.status_code == 403 and "owner" in reply.json()["detail"]
    with mlflow_as(werkhub, people["cleo"]) as client:
        denied(client.get_experiment, experiment)  # not in the group

    # EDIT lets the group log runs
    with werkhub.client(people["ana"]) as ana:
        reply = ana.post(url, json={"group": GROUP, "permission": "EDIT"})
        assert reply.json()["shares"] == {GROUP: "EDIT"}
    with mlflow_as(werkhub, people["ben"]) as client:
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", 0.95)

    # unsharing takes it away again
    with werkhub.client(people["ana"]) as ana:
        reply = ana.delete(f"{url}/{GROUP}")
        assert reply.status_code == 200 and reply.json()["shares"] == {}
        again = ana.delete(f"{url}/{GROUP}")
        assert again.status_code == 404 and GROUP in again.json()["detail"]
        listed = ana.get(f"{SHARE}/{experiment}/shares")
        assert listed.status_code == 200 and listed.json()["shares"] == {}
    with mlflow_as(werkhub, people["ben"]) as client:
        denied(client.get_experiment, experiment)


def test_new_group_member_gets_the_share(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict
) -> None:
    experiment = ana_run["experiment"]
    with werkhub.client(people["ana"]) as ana:
        reply = ana.post(f"{SHARE}/{experiment}/share", json={"group": GROUP})
        assert reply.status_code == 200 and reply.json()["shares"] == {GROUP: "READ"}
    with mlflow_as(werkhub, people["cleo"]) as client:
        denied(client.get_experiment, experiment)
    with werkhub.admin() as api:
        reply = api.post(f"/hub/api/groups/{GROUP}/users", json={"users": ["cleo"]})
        assert reply.status_code == 200, reply.text
    # the gateway notices the new membership (hub details are cached for seconds)
    deadline = time.monotonic() + 30
    with werkhub.client(people["cleo"]) as api:
        while True:
            reply = api.get(f"{API}/experiments/get", params={"experiment_id": experiment})
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert reply.status_code == 200, reply.text
    with werkhub.admin() as api:
        api.request("DELETE", f"/hub/api/groups/{GROUP}/users", json={"users": ["cleo"]})
    with werkhub.client(people["ana"]) as ana:
        ana.delete(f"{SHARE}/{experiment}/share/{GROUP}")


def test_accounts_are_managed_by_the_hub_only(werkhub: Werkhub, people: dict[str, str]) -> None:
    with werkhub.client(people["ana"]) as api:
        reply = api.patch(
            f"{API}/users/update-password", json={"username": "ana", "password": "x" * 20}
        )
        assert reply.status_code == 403 and "managed by the hub" in reply.json()["detail"]
        reply = api.post(f"{API}/users/create", json={"username": "evil", "password": "y" * 20})
        assert reply.status_code == 403
    # the private MLflow server listens on loopback and wants MLflow credentials
    address = json.loads((werkhub.state / "mlflow" / "internal.json").read_text())
    assert address["url"].startswith("http://127.0.0.1:")
    assert str(werkhub.ports["mlflow"]) not in address["url"]
    private = f"{address['url']}{address['prefix']}/api/2.0/mlflow/experiments/search"
    reply = httpx.get(private, params={"max_results": 5})
    assert reply.status_code == 401
    for token in (people["ana"], werkhub.admin_token):
        # a hub token is no MLflow credential (MLflow 3.17 answers a Bearer header with 500)
        reply = httpx.get(private, headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code in (401, 500), reply.status_code
        assert "experiments" not in reply.text
    # the gateway's own port forwards nothing outside its prefix
    gateway = f"http://127.0.0.1:{werkhub.ports['mlflow']}"
    reply = httpx.get(
        f"{gateway}/api/2.0/mlflow/experiments/search",
        headers={"Authorization": f"Bearer {werkhub.admin_token}"},
    )
    assert reply.status_code == 404
    key = werkhub.state / "secrets" / "mlflow-gateway-key"
    assert key.stat().st_mode & 0o077 == 0


def test_without_login_api_401_and_browser_goes_to_hub_login(werkhub: Werkhub) -> None:
    with werkhub.client() as api:
        reply = api.get(f"{API}/experiments/search", params={"max_results": 5})
        assert reply.status_code == 401 and "token" in reply.json()["detail"]
        reply = api.get(f"{API}/experiments/search", headers={"Authorization": "Bearer nope"})
        assert reply.status_code == 401
        assert api.get("/services/mlflow/health").status_code == 200  # probes need no login
        page = api.get("/services/mlflow/", headers={"Accept": "text/html"})
        assert page.status_code == 302
        assert "/hub/api/oauth2/authorize" in page.headers["location"]
    with httpx.Client(base_url=werkhub.url, follow_redirects=True, timeout=30) as browser:
        page = browser.get("/services/mlflow/", headers={"Accept": "text/html"})
        assert page.url.path == "/hub/login"


def login(browser: httpx.Client, name: str, password: str) -> None:
    page = browser.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf, "login form without xsrf field"
    browser.post("/hub/login", data={"username": name, "password": password, "_xsrf": xsrf[1]})


def test_browser_reaches_mlflow_ui_with_hub_login_only(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict
) -> None:
    added = werkhub.cli("users", "add", "dora")
    assert added.returncode == 0, added.stderr
    password = re.search(r"Password \(shown once\): (\S+)", added.stdout)
    assert password
    headers = {"Accept": "text/html"}
    with httpx.Client(base_url=werkhub.url, follow_redirects=True, timeout=60) as browser:
        login(browser, "dora", password[1])
        page = browser.get("/services/mlflow/", headers=headers)
        assert page.status_code == 200, page.text[:300]
        assert page.url.path == "/services/mlflow/"
        assert "<html" in page.text.lower()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
        assert assets, page.text[:500]
        for asset in assets[:3]:
            url = asset if asset.startswith("/") else f"/services/mlflow/{asset.lstrip('./')}"
            assert browser.get(url).status_code == 200, url
        ajax = "/services/mlflow/ajax-api/2.0/mlflow/experiments"
        found = browser.get(f"{ajax}/search", params={"max_results": 50})
        assert found.status_code == 200, found.text
        assert found.json().get("experiments", []) == []  # dora sees nobody else's work
        origin = {"Origin": werkhub.url}
        made = browser.post(f"{ajax}/create", json={"name": "dora-ui"}, headers=origin)
        assert made.status_code == 200, made.text
        foreign = browser.post(
            f"{ajax}/create", json={"name": "csrf"}, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        other = browser.get(f"{ajax}/get", params={"experiment_id": ana_run["experiment"]})
        assert other.status_code == 403


def test_spawned_server_has_its_mlflow_identity(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict
) -> None:
    werkhub.spawn("ana", people["ana"])
    env = server_env(werkhub, "ana")
    gateway = f"http://127.0.0.1:{werkhub.ports['mlflow']}/services/mlflow"
    assert env["MLFLOW_TRACKING_URI"] == gateway
    assert env["MLFLOW_TRACKING_TOKEN"] == env["JUPYTERHUB_API_TOKEN"]
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    # what a notebook in that server does: log with no login of its own
    with mlflow_as(werkhub, env["MLFLOW_TRACKING_TOKEN"]) as client:
        found = client.search_experiments(filter_string="name = 'ana-inspection'")
        assert [e.experiment_id for e in found] == [ana_run["experiment"]]


def test_service_mints_job_tokens_for_owner(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HubAuthenticator.mint_token with the werkhub service's own hub token and role."""
    import asyncio

    from fastapi import HTTPException

    from werkhub.auth.hub import HubAuthenticator

    service = service_env(werkhub)
    for key, value in service.items():
        if key.startswith("JUPYTERHUB_"):
            monkeypatch.setenv(key, value)
    scopes = ["access:services!service=mlflow", "access:services!service=werkhub"]

    async def mint() -> tuple[str, int]:
        auth = HubAuthenticator()
        try:
            token = await auth.mint_token("ana", "job 7 run 1", 600, scopes)
            with pytest.raises(HTTPException) as info:
                await auth.mint_token("ana", "too much", 600, ["admin:users"])
            return token, info.value.status_code
        finally:
            await auth.aclose()

    token, refused = asyncio.run(mint())
    assert refused in (400, 403)
    with werkhub.client(token) as api:
        assert api.get("/services/werkhub/api/me").json()["name"] == "ana"
        assert api.get("/hub/api/users/ben").status_code in (403, 404)
    with mlflow_as(werkhub, token) as client:
        assert client.get_run(ana_run["run"]).data.metrics == {"accuracy": 0.93}
    with werkhub.admin() as api:
        tokens = api.get("/hub/api/users/ana/tokens").json()["api_tokens"]
    minted = [t for t in tokens if t["note"] == "job 7 run 1"]
    assert minted and minted[0]["expires_at"]


def service_env(hub: Werkhub) -> dict[str, str]:
    """Environment of the running werkhub service process (its hub token and URLs)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"werkhub.service.app" not in cmdline:
                continue
            raw = (entry / "environ").read_bytes().decode()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if env.get("WERKHUB_STATE") == str(hub.state.resolve()):
            return env
    raise AssertionError("no werkhub service process for this hub")


def test_mlflow_crash_restarts_gateway_and_server(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict
) -> None:
    """MLflow dies: the gateway ends too, the hub restarts it with a fresh MLflow."""
    before = json.loads((werkhub.state / "mlflow" / "internal.json").read_text())["url"]
    port = before.rsplit(":", 1)[1]
    killed = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in cmdline and b"--port" in cmdline and port.encode() in cmdline:
            os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
            killed = True
            break
    assert killed, "no private MLflow server found"
    deadline = time.monotonic() + 120
    reply = None
    with werkhub.client(people["ana"]) as api:
        while time.monotonic() < deadline:
            try:
                params = {"experiment_id": ana_run["experiment"]}
                reply = api.get(f"{API}/experiments/get", params=params)
            except httpx.HTTPError:
                reply = None
            if reply is not None and reply.status_code == 200:
                break
            time.sleep(1)
    assert reply is not None and reply.status_code == 200, reply and reply.text
    assert reply.json()["experiment"]["name"] == "ana-inspection"
    after = json.loads((werkhub.state / "mlflow" / "internal.json").read_text())["url"]
    assert after != before


def _pids(match: Callable[[list[bytes], dict[str, str]], bool]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            raw = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if match(cmdline, env):
            found.append(int(entry.name))
    return found


def test_gateway_killed_takes_its_mlflow_server_along(
    werkhub: Werkhub, people: dict[str, str], ana_run: dict
) -> None:
    """SIGKILL of the gateway leaves no private MLflow server behind; the hub restarts both."""
    state = str(werkhub.state.resolve())
    before = json.loads((werkhub.state / "mlflow" / "internal.json").read_text())["url"]
    port = before.rsplit(":", 1)[1].encode()
    servers = _pids(lambda cmd, _env: b"server" in cmd and b"--port" in cmd and port in cmd)
    gateways = _pids(
        lambda cmd, env: b"werkhub.tracking.gateway" in cmd and env.get("WERKHUB_STATE") == state
    )
    assert servers and len(gateways) == 1
    os.kill(gateways[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in servers):
        time.sleep(0.5)
    left = [p for p in servers if Path(f"/proc/{p}").exists()]
    assert not left, f"private MLflow server {left} outlived its gateway"
    deadline = time.monotonic() + 120
    status = 0
    with werkhub.client(people["ana"]) as api:
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                params = {"experiment_id": ana_run["experiment"]}
                status = api.get(f"{API}/experiments/get", params=params).status_code
            if status == 200:
                break
            time.sleep(1)
    assert status == 200
