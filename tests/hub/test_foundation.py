"""The embedded default end to end: a real `werkhub up` with hub, proxy, services, users."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest
import yaml

from tests.support.hub import Werkhub, port_open, processes_in, server_env
from werkhub_widgets import ServiceError, WerkhubClient

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def two_users(werkhub: Werkhub) -> dict[str, str]:
    tokens = {name: werkhub.create_user(name) for name in ("alice", "bob")}
    for name, token in tokens.items():
        werkhub.spawn(name, token)
    return tokens


def test_users_reach_only_their_own_server(werkhub: Werkhub, two_users: dict[str, str]) -> None:
    for name, token in two_users.items():
        other = "bob" if name == "alice" else "alice"
        with werkhub.client(token) as api:
            own = api.get(f"/user/{name}/api/status")
            assert own.status_code == 200, own.text
            assert "started" in own.json()
            foreign = api.get(f"/user/{other}/api/status", follow_redirects=True)
            assert foreign.status_code == 403, foreign.status_code


def test_user_home_is_under_state_folder(werkhub: Werkhub, two_users: dict[str, str]) -> None:
    with werkhub.client(two_users["alice"]) as api:
        reply = api.put(
            "/user/alice/api/contents/hello.txt",
            json={"type": "file", "format": "text", "content": "hi from alice"},
        )
        assert reply.status_code in (200, 201), reply.text
    assert (werkhub.state / "homes" / "alice" / "hello.txt").read_text() == "hi from alice"
    assert not (werkhub.state / "homes" / "bob" / "hello.txt").exists()


def test_service_me_answers_for_each_user(werkhub: Werkhub, two_users: dict[str, str]) -> None:
    for name, token in two_users.items():
        with werkhub.client(token) as api:
            reply = api.get("/services/werkhub/api/me")
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"name": name, "kind": "user", "admin": False, "groups": []}
    with werkhub.admin() as api:
        me = api.get("/services/werkhub/api/me").json()
    assert me["name"] == "admin" and me["admin"] is True


def test_service_rejects_missing_bad_and_unscoped_tokens(
    werkhub: Werkhub, two_users: dict[str, str]
) -> None:
    with werkhub.client() as api:
        missing = api.get("/services/werkhub/api/me")
        assert missing.status_code == 401
        assert "token" in missing.json()["detail"]
        bad = api.get("/services/werkhub/api/me", headers={"Authorization": "token nope"})
        assert bad.status_code == 401
    with werkhub.admin() as api:
        reply = api.post("/hub/api/users/bob/tokens", json={"scopes": ["read:users:name!user"]})
        assert reply.status_code == 201, reply.text
        narrow = reply.json()["token"]
    with werkhub.client(narrow) as api:
        assert api.get("/services/werkhub/api/me").status_code == 403


def test_health_and_openapi(werkhub: Werkhub) -> None:
    with werkhub.client() as api:
        health = api.get("/services/werkhub/api/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        spec = api.get("/services/werkhub/api/openapi.json").json()
    assert spec["info"]["title"] == "werkhub"
    assert "/services/werkhub/api/me" in spec["paths"]
    assert "/services/werkhub/api/health" in spec["paths"]


def mlflow_server_port(werkhub: Werkhub) -> int:
    for line in processes_in(werkhub.state):
        found = re.search(r"uvicorn .*--port[ =](\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("no MLflow server among:\n" + "\n".join(processes_in(werkhub.state)))


def received(sock: socket.socket, name: str) -> bytes:
    chunk = sock.recv(4096)
    assert chunk, f"the {name} closed the connection before its answer was complete"
    return chunk


def test_the_services_keep_an_idle_proxy_connection_open(werkhub: Werkhub) -> None:
    """The proxy reuses idle upstream connections: a service that closes one after a few
    seconds races the proxy's next request on it, which then answers 503 (ECONNRESET)."""
    servers = {
        "werkhub": (werkhub.ports["service"], "/services/werkhub/api/health"),
        "mlflow": (werkhub.ports["mlflow"], "/services/mlflow/health"),
        # MLflow's own server behind the gateway, on the port the gateway gave it
        "mlflow-server": (mlflow_server_port(werkhub), "/health"),
    }
    opened = {}
    for name, (port, path) in servers.items():
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += received(sock, name)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), (name, head)  # MLflow's own: 403, no login
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        # all of the answer read (a length, or chunks): what is left is the end or not
        while len(body) < int(length.group(1)) if length else not body.endswith(b"0\r\n\r\n"):
            body += received(sock, name)
        opened[name] = sock
    time.sleep(6.5)  # past uvicorn's default keep-alive of 5 s
    for name, sock in opened.items():
        sock.setblocking(False)
        try:
            closed = sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            closed = False  # nothing to read, and no end: still open
        sock.close()
        assert not closed, f"the {name} closed an idle keep-alive connection"


def test_browser_cookie_login_reaches_service(werkhub: Werkhub) -> None:
    """A browser logs in with the first-run admin password and uses the OAuth cookie."""
    assert werkhub.first_password, "first run did not print the admin password"
    with httpx.Client(base_url=werkhub.url, follow_redirects=True, timeout=30) as browser:
        page = browser.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf, "login form without xsrf field"
        bad = browser.post(
            "/hub/login",
            data={"username": "admin", "password": "wrong-password", "_xsrf": xsrf.group(1)},
        )
        assert "Invalid username or password" in bad.text
        page = browser.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf
        browser.post(
            "/hub/login",
            data={"username": "admin", "password": werkhub.first_password, "_xsrf": xsrf.group(1)},
        )
        reply = browser.get("/services/werkhub/api/me", headers={"Accept": "text/html"})
        assert reply.status_code == 200, reply.text[:300]
        assert reply.json()["name"] == "admin"
        landing = browser.get("/services/werkhub/")
        assert "Signed in as <strong>admin</strong>" in landing.text


def test_password_never_stored_in_plain_text(werkhub: Werkhub) -> None:
    assert werkhub.first_password
    secret = werkhub.first_password.encode()
    for path in werkhub.state.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret not in path.read_bytes(), f"password found in {path}"


def test_mlflow_reachable_through_hub(werkhub: Werkhub) -> None:
    with werkhub.admin() as api:  # the MLflow gateway wants a hub login or token
        ui = api.get("/services/mlflow/")
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        search = api.get(
            "/services/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 10}
        )
    assert search.status_code == 200, search.text
    assert any(e["name"] == "Default" for e in search.json()["experiments"])
    assert (werkhub.state / "mlflow" / "mlflow.db").exists()


def test_cli_users_add_with_admin_and_group(werkhub: Werkhub) -> None:
    result = werkhub.cli("users", "add", "carol", "--admin", "--group", "quality")
    assert result.returncode == 0, result.stderr
    password = re.search(r"Password \(shown once\): (\S+)", result.stdout)
    assert password
    with werkhub.admin() as api:
        carol = api.get("/hub/api/users/carol").json()
        token = api.post("/hub/api/users/carol/tokens", json={}).json()["token"]
    assert carol["admin"] is True and carol["groups"] == ["quality"]
    with werkhub.client(token) as api:
        me = api.get("/services/werkhub/api/me").json()
    assert me == {"name": "carol", "kind": "user", "admin": True, "groups": ["quality"]}
    bad = werkhub.cli("users", "add", "Not Valid!")
    assert bad.returncode == 1 and "not a valid user name" in bad.stderr


def test_signup_waits_for_approval(werkhub: Werkhub) -> None:
    with httpx.Client(base_url=werkhub.url, follow_redirects=True, timeout=30) as browser:

        def xsrf(path: str) -> str:
            match = re.search(r'name="_xsrf" value="([^"]+)"', browser.get(path).text)
            assert match
            return match.group(1)

        assert "Request one" in browser.get("/hub/login").text
        short = browser.post(
            "/hub/signup",
            data={
                "username": "dave",
                "password": "short",
                "password_repeat": "short",
                "_xsrf": xsrf("/hub/signup"),
            },
        )
        assert short.status_code == 400 and "at least 10 characters" in short.text
        form = {"username": "dave", "password": "a-long-secret", "password_repeat": "a-long-secret"}
        done = browser.post("/hub/signup", data={**form, "_xsrf": xsrf("/hub/signup")})
        assert done.status_code == 200 and "administrator will approve" in done.text
        again = browser.post("/hub/signup", data={**form, "_xsrf": xsrf("/hub/signup")})
        assert again.status_code == 400 and "taken" in again.text
        login = {"username": "dave", "password": "a-long-secret"}
        waiting = browser.post("/hub/login", data={**login, "_xsrf": xsrf("/hub/login")})
        assert waiting.status_code == 403 and "waiting for approval" in waiting.text
        approved = werkhub.cli("users", "approve", "dave")
        assert approved.returncode == 0, approved.stderr
        browser.post("/hub/login", data={**login, "_xsrf": xsrf("/hub/login")})
        assert browser.get("/hub/api/user").json()["name"] == "dave"


def test_second_up_on_same_state_refuses(werkhub: Werkhub) -> None:
    result = werkhub.cli("up")
    assert result.returncode == 1
    assert "already running on the state folder" in result.stderr


def test_broken_config_is_refused_and_starts_nothing(fresh_werkhub: Werkhub) -> None:
    text = fresh_werkhub.config.read_text()
    fresh_werkhub.config.write_text(text + "spawner:\n  kind: dockr\n  mem_limt: 1G\n")
    for args in (("up",), ("config", "validate", str(fresh_werkhub.config))):
        result = fresh_werkhub.cli(*args)
        assert result.returncode == 2, result.stderr
        assert (
            "spawner.kind" in result.stderr
            and "'local', 'docker', 'kubernetes' or 'slurm'" in result.stderr
        )
        assert "spawner.mem_limt: unknown key" in result.stderr
    assert not (fresh_werkhub.state / "jupyterhub.sqlite").exists()
    assert not port_open(fresh_werkhub.ports["public"])


def test_restart_keeps_users_files_and_stops_everything(fresh_werkhub: Werkhub) -> None:
    hub = fresh_werkhub
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    token = hub.create_user("erin")
    hub.spawn("erin", token)
    with hub.client(token) as api:
        api.put(
            "/user/erin/api/contents/keep.txt",
            json={"type": "file", "format": "text", "content": "kept"},
        )
    assert hub.stop() == 0
    time.sleep(0.5)
    assert processes_in(hub.state) == []
    for port in hub.ports.values():
        assert not port_open(port), f"port {port} still open after stop"

    hub.output.clear()
    hub.start()
    assert hub.first_password is not None  # from the first run; not printed again
    assert not any("First run" in line for line in hub.output)
    with hub.admin() as api:
        assert api.get("/hub/api/users/erin").status_code == 200
    hub.spawn("erin", token)  # the old token still works
    with hub.client(token) as api:
        kept = api.get("/user/erin/api/contents/keep.txt").json()
    assert kept["content"] == "kept"


def test_server_token_reaches_service_through_widget_client(
    werkhub: Werkhub, two_users: dict[str, str]
) -> None:
    """The identity a server is given at spawn lets the notebook-side client call werkhub."""
    env = server_env(werkhub, "alice")
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    with werkhub.client(two_users["alice"]) as api:
        lab = api.get("/user/alice/lab")
    assert lab.status_code == 200
    # sovereign: JupyterLab's news feed and update check are off in user servers
    assert '"news": {"disabled": true}' in lab.text
    with WerkhubClient(env["WERKHUB_SERVICE_URL"], env["JUPYTERHUB_API_TOKEN"]) as client:
        assert client.me()["name"] == "alice"
        assert client.health()["status"] == "ok"
        with pytest.raises(ServiceError) as info:
            client.request("GET", "api/nothing-here")
    assert info.value.status == 404 and "No such werkhub endpoint" in info.value.message
    with (
        WerkhubClient(env["WERKHUB_SERVICE_URL"], "not-a-token") as client,
        pytest.raises(ServiceError, match="does not know this token"),
    ):
        client.me()


def test_escape_hatch_runs_and_failed_start_keeps_no_unseen_password(
    fresh_werkhub: Werkhub,
) -> None:
    """jupyterhub_config.d/*.py next to werkhub.yaml is loaded; if the hub then fails to
    come up, the first-run password (never shown) is dropped and a new one shown later."""
    hub = fresh_werkhub
    hatch = hub.config.parent / "jupyterhub_config.d"
    hatch.mkdir()
    (hatch / "10-broken.py").write_text("raise RuntimeError('site config broke')\n")
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    result = hub.cli("up")
    assert result.returncode != 0
    assert "site config broke" in result.stdout + result.stderr
    assert "First run" not in result.stdout
    assert processes_in(hub.state) == []

    (hatch / "10-broken.py").write_text("c.JupyterHub.template_vars = {'werkhub_signup': False}\n")
    hub.start()
    assert hub.first_password, "".join(hub.output[-30:])
    with httpx.Client(base_url=hub.url, follow_redirects=True, timeout=30) as browser:
        page = browser.get("/hub/login")
        assert "Request one" not in page.text  # the escape hatch switched the link off
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf
        browser.post(
            "/hub/login",
            data={"username": "admin", "password": hub.first_password, "_xsrf": xsrf.group(1)},
        )
        assert browser.get("/hub/api/user").json()["name"] == "admin"


def test_a_service_failing_while_the_hub_starts_leaves_nothing_running(
    fresh_werkhub: Werkhub,
) -> None:
    """JupyterHub exits at once when a managed service does not come up (here MLflow cannot
    bind its private port), before it can clean anything up: ``werkhub up`` ends the proxy
    and the service the hub had started, says what happened and exits with an error."""
    hub = fresh_werkhub
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = yaml.safe_load(hub.config.read_text())
        config["services"]["mlflow"]["internal_port"] = taken.getsockname()[1]
        hub.config.write_text(yaml.safe_dump(config))
        hub.state.parent.mkdir(parents=True, exist_ok=True)
        result = hub.cli("up")  # returns once nothing holds its output open any more
    assert result.returncode != 0, result.stdout[-3000:]
    assert "werkhub: the hub exited before it came up" in result.stdout
    assert re.search(r"werkhub: ended \d+ process\(es\) the hub had started", result.stdout)
    assert processes_in(hub.state) == []
    for port in hub.ports.values():
        assert not port_open(port), f"port {port} still open after the hub exited"
