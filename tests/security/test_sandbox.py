"""Sandboxed user code in the embedded default (issue 12, items 2 and 9): from inside a
user server (a real kernel over the Jupyter websocket) and from a local job (a real
papermill run), read every secret, both databases, another user's home and the hub's
environment, list processes, widen the GPU booking with CUDA_VISIBLE_DEVICES, exhaust
processes; each attack must fail. Real hub, real bubblewrap, stand-in device files."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.support.hub import ROOT, Werkhub, make_werkhub
from werkhub.auth.userstore import UserStore

pytestmark = [
    pytest.mark.hub,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (make test)"),
]
API = "/services/werkhub/api"
MAX_PROCESSES = 256
MARK = "ATTACK-RESULT:"

# runs inside the sandbox; ARGS is replaced by the test's facts
ATTACK = r"""
import json, os, pwd, threading
args = json.loads(ARGS)

def read(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return "read"
    except OSError as exc:
        return type(exc).__name__

found = {"uid": os.getuid(), "gid": os.getgid()}
try:
    entry = pwd.getpwuid(os.getuid())
    found["account"] = [entry.pw_name, entry.pw_dir, os.path.expanduser("~")]
except KeyError:
    found["account"] = None
found["reads"] = {path: read(path) for path in args["targets"]}
try:
    found["other_home"] = os.listdir(args["other_home"])
except OSError as exc:
    found["other_home"] = type(exc).__name__
pids = [p for p in os.listdir("/proc") if p.isdigit()]
found["processes"] = {}
leaked = set()
for pid in pids:
    try:
        found["processes"][pid] = open(f"/proc/{pid}/cmdline", "rb").read().decode(
            errors="replace").replace("\0", " ")[:120]
        environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    except OSError:
        continue
    for item in environ.split("\0"):
        key, _, value = item.partition("=")
        if key in args["secret_keys"] or value in args["secret_values"]:
            leaked.add(f"{pid}:{key}")
found["leaked"] = sorted(leaked)
found["own_env_keys"] = sorted(os.environ)
os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(args["gpus"]))
openable = []
for i in range(args["gpus"]):
    for path in (f"/dev/nvidia{i}", f"{args['device_dir']}/nvidia{i}"):
        if read(path) == "read":
            openable.append(i)
            break
found["openable_gpus"] = openable
found["units"] = os.environ.get("WERKHUB_GPU_UNITS", "")
found["sandbox"] = os.environ.get("WERKHUB_SANDBOX", "")
stop = threading.Event()
threads = []
try:
    for _ in range(args["max_threads"]):
        thread = threading.Thread(target=stop.wait, daemon=True)
        thread.start()
        threads.append(thread)
    found["threads"] = len(threads)
except RuntimeError:
    found["threads"] = len(threads)
stop.set()
for thread in threads:
    thread.join()
print(MARK + json.dumps(found))
""".replace("MARK", repr(MARK))


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files standing in for /dev/nvidia0..3 and the control device (no GPU here)."""
    folder = tmp_path_factory.mktemp("fake-dev")
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl"):
        (folder / name).write_text(name)
        (folder / name).chmod(0o666)
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, devices: Path) -> Iterator[Werkhub]:
    nodes = [
        {
            "name": "n1",
            "devices": [{"index": i, "model": "H100", "memory_gb": 80} for i in range(4)],
        }
    ]
    werkhub = make_werkhub(
        tmp_path_factory.mktemp("sandbox"),
        {
            "gpus": {"simulated": True, "nodes": nodes},
            "spawner": {
                "sandbox": {
                    "mode": "required",
                    "device_dir": str(devices),
                    "max_processes": MAX_PROCESSES,
                },
            },
            "jobs": {"tick_seconds": 1},
        },
    )
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def users(hub: Werkhub) -> dict[str, str]:
    tokens = {name: hub.create_user(name) for name in ("sb-ann", "sb-bob")}
    hub.spawn("sb-bob", tokens["sb-bob"])
    private = hub.state / "homes" / "sb-bob" / "private.txt"
    private.write_text("bob's notes")
    return tokens


def facts(hub: Werkhub, devices: Path) -> dict[str, Any]:
    state = hub.state.resolve()
    secrets = sorted(str(p) for p in (state / "secrets").iterdir() if p.is_file())
    assert secrets, "the state folder has secrets to steal"
    hub_pid = (state / "jupyterhub.pid").read_text().strip()
    targets = [
        *secrets,
        str(state / "users.sqlite"),
        str(state / "jupyterhub.sqlite"),
        str(state / "werkhub.sqlite"),
        str(state / "mlflow" / "mlflow.db"),
        str(state / "homes" / "sb-bob" / "private.txt"),
        str(hub.config.resolve()),
        f"/proc/{hub_pid}/environ",
    ]
    values = [hub.admin_token, *(Path(s).read_text().strip() for s in secrets)]
    keys = [
        "WERKHUB_ADMIN_TOKEN",
        "WERKHUB_CLI_TOKEN",
        "WERKHUB_SPAWNER_TOKEN",
        "CONFIGPROXY_AUTH_TOKEN",
        "JPY_COOKIE_SECRET",
        "WERKHUB_SPAWNER_TOKEN_SHA256",
    ]
    return {
        "targets": targets,
        "other_home": str(state / "homes" / "sb-bob"),
        "secret_keys": keys,
        "secret_values": [v for v in values if len(v) >= 16],
        "gpus": 4,
        "device_dir": str(devices),
        "max_threads": MAX_PROCESSES + 50,
        "hub_pid": hub_pid,
    }


def attack_code(hub: Werkhub, devices: Path) -> str:
    return ATTACK.replace("ARGS", repr(json.dumps(facts(hub, devices))), 1)


def run_in_kernel(hub: Werkhub, name: str, token: str, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in a new kernel of ``name``'s server; its stdout."""
    with hub.client(token) as api:
        reply = api.post(f"/user/{name}/api/kernels", json={"name": "python3"})
        assert reply.status_code == 201, reply.text
        kernel = reply.json()["id"]
    url = f"ws://127.0.0.1:{hub.ports['public']}/user/{name}/api/kernels/{kernel}/channels"
    ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=60)
    msg_id, out = uuid.uuid4().hex, []
    header = {
        "msg_id": msg_id,
        "username": name,
        "session": uuid.uuid4().hex,
        "msg_type": "execute_request",
        "version": "5.3",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    ws.send(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()
        with hub.client(token) as api:
            api.delete(f"/user/{name}/api/kernels/{kernel}")
    raise TimeoutError("".join(out))


def result_of(printed: str) -> dict[str, Any]:
    line = next(ln for ln in printed.splitlines() if ln.startswith(MARK))
    return json.loads(line[len(MARK) :])


def breaches(found: dict[str, Any], facts_: dict[str, Any]) -> list[str]:
    """Every attack that worked, one line each (empty: the sandbox held)."""
    problems = [f"read {path}" for path, how in found["reads"].items() if how == "read"]
    if found["other_home"] != "FileNotFoundError":
        problems.append(f"listed another user's home: {found['other_home']}")
    # only the sandbox's own processes: its init, the server or runner, kernels
    commands = " | ".join(found["processes"].values())
    for foreign in ("jupyterhub ", "configurable-http-proxy", "werkhub.service.app", "sb-bob"):
        if foreign in commands:
            problems.append(f"sees the process {foreign!r}")
    if found["leaked"]:
        problems.append(f"read secrets in environments: {found['leaked']}")
    problems += [
        f"own environment holds {key}"
        for key in facts_["secret_keys"]
        if key in found["own_env_keys"]
    ]
    if os.geteuid() == 0 and 0 in (found["uid"], found["gid"]):
        problems.append(f"runs as root (uid {found['uid']}, gid {found['gid']})")
    if "bubblewrap" not in found["sandbox"] or f"processes {MAX_PROCESSES}" not in found["sandbox"]:
        problems.append(f"not sandboxed with limits: {found['sandbox']!r}")
    if found["threads"] >= MAX_PROCESSES:
        problems.append(f"started {found['threads']} threads past the process limit")
    booked = sorted({int(unit.split("/")[1]) for unit in found["units"].split(",") if unit})
    if len(booked) != 1 or found["openable_gpus"] != booked:
        problems.append(f"GPUs {found['openable_gpus']} reachable, booked {booked}")
    return problems


def test_a_user_server_cannot_reach_secrets_others_or_unbooked_gpus(
    hub: Werkhub, users: dict[str, str], devices: Path
) -> None:
    token = users["sb-ann"]
    with hub.client(token) as api:
        options = {"gpu": "on_demand", "gpu_type": "H100", "count": 1, "duration_minutes": 30}
        reply = api.post("/hub/api/users/sb-ann/server", json=options)
        assert reply.status_code in (201, 202), reply.text
    hub.spawn("sb-ann", token)
    known = facts(hub, devices)
    found = result_of(run_in_kernel(hub, "sb-ann", token, attack_code(hub, devices)))
    assert breaches(found, known) == []
    ann_home, bob_home = hub.state / "homes" / "sb-ann", hub.state / "homes" / "sb-bob"
    if os.geteuid() == 0:
        # each user's own uid owns only that user's home, and has an account entry
        assert ann_home.stat().st_uid == found["uid"] != bob_home.stat().st_uid
        assert found["account"] == ["sb-ann", str(ann_home), str(ann_home)]
    assert ann_home.stat().st_mode & 0o777 == 0o700
    hub.stop_server("sb-ann", token)
    if os.geteuid() == 0:  # stopping the server ends every process of the sandbox
        assert no_processes_of(found["uid"]) == []


def processes_of(uid: int) -> list[str]:
    """Live processes of ``uid`` (pid and command line; zombies, already ended and only
    waiting for their parent to collect their status, are not counted)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(f"{entry.name} {command.strip()}")
    return found


def no_processes_of(uid: int, timeout: float = 15) -> list[str]:
    """Wait until ``uid`` has no live process (a stopped sandbox's processes get SIGKILL
    from its PID namespace ending, which a loaded machine delivers within moments)."""
    deadline = time.monotonic() + timeout
    while (left := processes_of(uid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_local_job_cannot_reach_secrets_others_or_unbooked_gpus(
    hub: Werkhub, users: dict[str, str], devices: Path
) -> None:
    token = hub.create_user("sb-cid")  # ann's server holds her GPU booking
    known = facts(hub, devices)
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": attack_code(hub, devices),
            }
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    home = hub.state / "homes" / "sb-cid"
    home.mkdir(parents=True, exist_ok=True)
    (home / "attack.ipynb").write_text(json.dumps(notebook))
    with hub.client(token) as api:
        reply = api.post(
            f"{API}/jobs",
            json={
                "name": "attack",
                "notebook": "attack.ipynb",
                "gpu": {"type": "H100", "minutes": 10},
            },
        )
        assert reply.status_code == 201, reply.text
        queued = api.post(f"{API}/jobs/{reply.json()['id']}/run")
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            run = api.get(f"{API}/runs/{run_id}").json()
            if run["status"] in ("succeeded", "failed", "timed_out"):
                break
            time.sleep(0.5)
        assert run["status"] == "succeeded", (run, api.get(f"{API}/runs/{run_id}/log").text)
        output = api.get(f"{API}/runs/{run_id}/notebook").json()
    printed = "".join(
        "".join(o.get("text", "")) for c in output["cells"] for o in c.get("outputs", [])
    )
    found = result_of(printed)
    assert breaches(found, known) == []
    if os.geteuid() == 0:  # the job's uid is the person's, with its account entry
        assert found["account"] == ["sb-cid", str(home), str(home)]


class NoBubblewrapWerkhub(Werkhub):
    """A werkhub whose PATH has node (for the proxy) but no bubblewrap: a machine that
    cannot sandbox."""

    def env(self) -> dict[str, str]:
        env = super().env()
        bin_dir = self.state.parent / "bin-without-bwrap"
        bin_dir.mkdir(parents=True, exist_ok=True)
        node = shutil.which("node")
        assert node, "the hub tier needs node"
        if not (bin_dir / "node").exists():
            (bin_dir / "node").symlink_to(node)
        env["PATH"] = os.pathsep.join([str(ROOT / "node_modules" / ".bin"), str(bin_dir)])
        return env


def without_bubblewrap(tmp: Path, sandbox: str) -> NoBubblewrapWerkhub:
    made = make_werkhub(tmp, {"spawner": {"sandbox": sandbox}})
    hub = NoBubblewrapWerkhub(made.state, made.config, made.ports, made.admin_token)
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    return hub


def test_required_sandbox_refuses_to_start_without_bubblewrap(tmp_path: Path) -> None:
    hub = without_bubblewrap(tmp_path, "required")
    done = hub.cli("up")
    assert done.returncode != 0
    assert "spawner.sandbox is required" in done.stderr and "bubblewrap" in done.stderr
    assert not (hub.state / "jupyterhub.sqlite").exists()  # nothing was started


def test_without_a_sandbox_werkhub_starts_single_team_and_says_so(tmp_path: Path) -> None:
    hub = without_bubblewrap(tmp_path, "auto")
    hub.start()
    try:
        said = "".join(hub.output)
        assert "user code is NOT isolated" in said and "bubblewrap" in said
        assert "self sign-up is off" in said
        with hub.client() as api:
            login = api.get("/hub/login")
            assert login.status_code == 200 and "/hub/signup" not in login.text
            assert 'data-testid="werkhub-single-team"' in login.text
            xsrf = api.cookies.get("_xsrf") or ""
            password = "correct-horse-battery"
            form = {"username": "eve", "password": password, "password_repeat": password}
            form["_xsrf"] = xsrf
            refused = api.post("/hub/signup", data=form)
            assert refused.status_code == 403, refused.text  # no self sign-up
            assert "Self sign-up is turned off" in refused.text
    finally:
        hub.stop()
    assert UserStore(hub.state / "users.sqlite").get("eve") is None  # nothing stored
    assert not hub.state.joinpath("sandbox", "uids.json").exists()


UID_ATTACK = """
id -u; id -g; id -G
cat "$SECRET" 2>/dev/null && echo READ-secret || echo DENIED-secret
cat "$STORE" 2>/dev/null && echo READ-store || echo DENIED-store
ls "$OTHER" 2>/dev/null && echo READ-home || echo DENIED-home
cat /proc/1/environ >/dev/null 2>&1 && echo READ-environ || echo DENIED-environ
cat "/proc/$HUB/environ" >/dev/null 2>&1 && echo READ-hub || echo DENIED-hub
echo mine > "$HOME/mine.txt" && echo WROTE-home
echo out > "$OUT/result.txt" && echo WROTE-out
pwd
echo "$WERKHUB_SANDBOX"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid of each person's own needs root")
def test_without_bubblewrap_root_runs_user_code_under_the_persons_own_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where werkhub runs as root but cannot sandbox (no bubblewrap, or sandbox: off), user
    code still never runs as root: the person's own uid, owning only their home and run
    folder; werkhub's private files, another home and root's processes stay closed."""
    import subprocess
    import tempfile

    from werkhub.sandbox.prepare import UID_REGISTRY_VAR, prepare
    from werkhub.sandbox.spec import SandboxError

    base = Path(tempfile.mkdtemp(prefix="werkhub-uid-", dir="/tmp"))
    umask = os.umask(0o077)  # as werkhub up sets it: new folders are private
    try:
        base.chmod(0o711)
        monkeypatch.setenv(UID_REGISTRY_VAR, str(base / "uids.json"))
        state = base / "state"
        (state / "secrets").mkdir(parents=True, mode=0o700)
        state.chmod(0o711)
        secret, store = state / "secrets" / "cli-token", state / "users.sqlite"
        for path in (secret, store):
            path.write_text("not for users")
            path.chmod(0o600)
        (state / "homes").mkdir(mode=0o711)
        settings = {
            "isolation": "uid",
            "state_root": str(state),
            "uid_base": 231_000,
            "uid_count": 50,
            "max_processes": 64,
        }

        def start(user: str, script: str, out: Path) -> tuple[Any, str]:
            home = state / "homes" / user
            prepared = prepare(
                settings,
                user,
                command=["/bin/sh", "-c", script],
                home=home,
                env={
                    "PATH": "/usr/bin:/bin",
                    "SECRET": str(secret),
                    "STORE": str(store),
                    "OTHER": str(state / "homes" / "uo-bob"),
                    "OUT": str(out),
                    "HUB": str(os.getpid()),
                },
                label="job",
                writable=[out],
            )
            try:
                done = subprocess.run(
                    prepared.argv,
                    env=prepared.env,
                    preexec_fn=prepared.preexec,
                    cwd=prepared.cwd,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            finally:
                prepared.release()
            assert done.returncode == 0, done.stderr
            return prepared, done.stdout

        bob, _ = start("uo-bob", 'echo notes > "$HOME/private.txt"', state / "reports" / "b" / "1")
        out = state / "reports" / "uo-ann" / "7" / "1"  # werkhub's private reports folder
        ann, printed = start("uo-ann", UID_ATTACK, out)
        lines = printed.splitlines()
        assert lines[:3] == [str(ann.uid)] * 3 and ann.uid not in (0, bob.uid)
        for attack in ("secret", "store", "home", "environ", "hub"):
            assert f"DENIED-{attack}" in lines, printed
        assert "WROTE-home" in lines and "WROTE-out" in lines
        assert lines[-2] == str(state / "homes" / "uo-ann")  # started in the home
        assert lines[-1].startswith(f"uid {ann.uid} without bubblewrap")
        home = state / "homes" / "uo-ann"
        assert home.stat().st_uid == ann.uid and home.stat().st_mode & 0o777 == 0o700
        assert out.stat().st_uid == ann.uid and (out / "result.txt").read_text() == "out\n"
        assert (state / "reports").stat().st_mode & 0o777 == 0o711  # passable, not listable
        assert secret.stat().st_mode & 0o777 == 0o600
        # a program behind a folder the uid cannot pass: refused with the folder named
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        tool = closed / "tool"
        tool.write_text("#!/bin/sh\nid -u\n")
        tool.chmod(0o755)
        with pytest.raises(SandboxError, match="may not pass through") as refused:
            prepare(
                settings,
                "uo-ann",
                command=[str(tool)],
                home=home,
                env={},
                label="server",
            )
        assert str(closed) in str(refused.value)
    finally:
        os.umask(umask)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made by a root-run werkhub")
def test_cgroups_left_by_a_crash_are_swept_at_start() -> None:
    """A hub killed before it released its sandboxes' cgroups leaves them behind; the next
    ``werkhub up`` removes the empty ones (and never one a process is still in)."""
    import subprocess

    from werkhub.sandbox.host import enforce, sweep_cgroups
    from werkhub.sandbox.spec import Limits

    label = f"swept-{uuid.uuid4().hex[:6]}"
    crashed = enforce(Limits(memory_bytes=256 * 1024**2, processes=32), f"{label}-a")
    if not crashed.cgroups:
        pytest.skip(f"no writable cgroups here ({crashed.how})")
    busy = enforce(Limits(memory_bytes=256 * 1024**2, processes=32), f"{label}-b")
    sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=busy.preexec())
    try:
        removed = sweep_cgroups(older_than_s=0, prefix=label)
        assert sorted(removed) == sorted(crashed.cgroups)
        assert not any(folder.exists() for folder in crashed.cgroups)
        assert all(folder.exists() for folder in busy.cgroups)  # a process is in them
    finally:
        sleeper.kill()
        sleeper.wait()
        busy.release()
    assert not any(folder.exists() for folder in busy.cgroups)
