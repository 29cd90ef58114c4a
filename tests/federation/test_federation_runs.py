"""Federation runs on a real werkhub with real SuperLinks and SuperNodes in sandboxes:
three organisations train the test app to the end, the rounds show through the API, the
owner's and each party's MLflow experiments get their metrics, the final model is
registered in the owner's registry and readable by every party's members but not by a
fourth organisation; a party's GPUs come from a booking in its own budget (a refused
booking starts nothing), a party killed mid-run is tolerated down to the minimum, a
revoked party is refused, and a restart of werkhub keeps federations, parties and keys."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.federation.world import API, FED, World, make_world, ok
from tests.support.hub import ROOT, Werkhub, running_werkhub
from tests.support.wait import wait_for

TINY = ROOT / "tests" / "federation" / "apps" / "tiny"
PARTIES = {"fedbeta": "fb-bob", "fedgamma": "fg-gil", "fedacme": "fa-ann"}
ENDED = ("finished", "failed", "stopped")
MLFLOW = "/services/mlflow/api/2.0/mlflow"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fedruns")
    with running_werkhub(tmp) as hub, keep_output(hub, tmp / "werkhub-output.log"):
        world = make_world(hub)
        shutil.copytree(TINY, world.home("fa-al") / "tinyapp")
        rng = np.random.default_rng(7)
        for user in PARTIES.values():
            folder = world.home(user) / "fed-data"
            folder.mkdir()
            x = rng.normal(size=(60, 4))
            y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25
            np.savetxt(folder / "points.csv", np.column_stack([x, y]), delimiter=",")
        yield world


@contextmanager
def keep_output(hub: Werkhub, path: Path) -> Iterator[None]:
    """werkhub's output (the service's log) kept next to the test's state."""
    try:
        yield
    finally:
        path.write_text("".join(hub.output))


def create(world: World, name: str, **extra: Any) -> int:
    body = {"name": name, "app": {"folder": "tinyapp"}, "rounds": 3, **extra}
    with world.client("fa-al") as al:
        return int(ok(al.post(FED, json=body))["id"])


def accept(world: World, fid: int, slug: str, gpus: int = 0) -> None:
    with world.client("fa-ann") as ann:
        ok(ann.post(f"{FED}/{fid}/invitations", json={"org": slug}), 201, 409)
    with world.client(PARTIES[slug]) as admin:
        body = {"data_folder": "fed-data", "gpus": gpus}
        ok(admin.post(f"{FED}/{fid}/accept", json=body))


def wait_run(api: httpx.Client, fid: int, rid: int, timeout: float = 420) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = ok(api.get(f"{FED}/{fid}/runs/{rid}"))
        return run if run["status"] in ENDED else None

    return wait_for(ended, timeout=timeout, interval=1, what=f"federation run {rid} to end")


def metric_history(api: httpx.Client, run_id: str, key: str) -> list[float]:
    reply = ok(
        api.get(f"{MLFLOW}/metrics/get-history", params={"run_id": run_id, "metric_key": key})
    )
    return [m["value"] for m in reply.get("metrics", [])]


def supernode_pids(world: World, fid: int, slug: str) -> list[int]:
    """The SuperNode processes of one party (found by their party folder)."""
    marker = str(world.hub.state / "federations" / str(fid) / "parties" / slug)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "flower-supernode" in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


def test_three_organisations_train_and_share_the_model(world: World) -> None:
    fid = create(world, "tiny-three", rounds=2)  # SecAgg+ takes four exchanges a round
    for slug in PARTIES:
        accept(world, fid, slug)
    with world.client("fa-al") as al:
        fed = ok(al.get(f"{FED}/{fid}"))
        assert fed["secure_aggregation"] is True  # three parties: SecAgg+ by default
        run = ok(al.post(f"{FED}/{fid}/runs", json={}), 202)
        assert run["status"] == "running" and run["flower_run_id"] is not None
        done = wait_run(al, fid, run["id"])
        assert done["status"] == "finished", done["message"]
        assert [r["round"] for r in done["rounds"]] == [1, 2]
        assert all(r["parties"] == 3 for r in done["rounds"])
        assert done["rounds"][-1]["loss"] < done["rounds"][0]["loss"]
        model = done["model"]
        assert model == {"name": "fa-al~federation-tiny-three", "version": "1"}
        # global metrics per round in the owner's experiment
        assert len(metric_history(al, done["mlflow"]["run_id"], "loss")) == 2
    for slug, user in PARTIES.items():
        with world.client(user) as admin:
            seen = ok(admin.get(f"{FED}/{fid}/runs/{run['id']}"))
            mine = seen["party_mlflow"]
            assert mine is not None, slug
            assert len(metric_history(admin, mine["run_id"], "local_loss")) == 2
    # every party's members read the model; a fourth organisation does not
    for user in ("fb-bea", "fg-gus", "fa-al"):
        with world.client(user) as member:
            got = member.get(f"{MLFLOW}/registered-models/get", params={"name": model["name"]})
            assert got.status_code == 200, (user, got.text)
    with world.client("fd-dora") as dora:
        got = dora.get(f"{MLFLOW}/registered-models/get", params={"name": model["name"]})
        assert got.status_code in (403, 404), got.text
        assert dora.get(f"{FED}/{fid}/runs/{run['id']}").status_code == 404


def test_gpus_come_from_a_booking_in_the_partys_budget(world: World) -> None:
    fid = create(world, "tiny-gpus", rounds=1)
    accept(world, fid, "fedbeta", gpus=1)
    accept(world, fid, "fedgamma")
    with world.hub.admin() as admin:  # beta has no budget left: its party cannot book
        ok(admin.patch(f"{API}/orgs/fedbeta", json={"budget_gpu_hours": 0}))
    with world.client("fa-al") as al:
        refused = al.post(f"{FED}/{fid}/runs", json={})
        assert refused.status_code == 409, refused.text
        assert "fedbeta" in refused.json()["detail"] and "book" in refused.json()["detail"]
        failed = ok(al.get(f"{FED}/{fid}/runs"))
        assert [r["status"] for r in failed] == ["failed"] and "fedbeta" in failed[0]["message"]
    with world.client("fb-bob") as bob:
        mine = ok(bob.get(f"{API}/bookings"))
        assert not [b for b in mine if b.get("user") == "fb-bob" and b["state"] == "active"]
    with world.hub.admin() as admin:
        ok(admin.patch(f"{API}/orgs/fedbeta", json={"budget_gpu_hours": None}))
    with world.client("fa-al") as al:
        run = ok(al.post(f"{FED}/{fid}/runs", json={"run_config": {"round-pause": 1.0}}), 202)
        with world.client("fb-bob") as bob:
            held = [
                b
                for b in ok(bob.get(f"{API}/bookings"))
                if b.get("user") == "fb-bob" and b["state"] == "active"
            ]
            assert len(held) == 1 and held[0]["count"] == 1
        done = wait_run(al, fid, run["id"])
        assert done["status"] == "finished", done["message"]
    with world.client("fb-bob") as bob:
        assert not [
            b
            for b in ok(bob.get(f"{API}/bookings"))
            if b.get("user") == "fb-bob" and b["state"] == "active"
        ]


TEMPLATE = ROOT / "templates" / "federated-quality-inspection"
#: the template's three parties (its non-IID data mixes) for the three organisations
TEMPLATE_PARTIES = {
    "fedacme": "machine-builder",
    "fedbeta": "supplier",
    "fedgamma": "software-house",
}


def test_the_template_app_runs_across_organisations_and_outlives_a_killed_party(
    world: World,
) -> None:
    flower_python = ROOT / ".venv-flower" / "bin" / "python"
    for slug, party in TEMPLATE_PARTIES.items():
        folder = world.home(PARTIES[slug]) / "inspection"
        done = subprocess.run(
            [
                *(str(flower_python), "-m", "fedinspect.data", "prepare", "--party", party),
                *("--out", str(folder), "--n", "240"),
            ],
            cwd=TEMPLATE,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    body = {
        "name": "inspection",
        "app": {"template": "federated-quality-inspection"},
        "rounds": 3,
        # SecAgg+ on, the default of three parties: the killed party's masks are rebuilt
        # from the others' shares; a stage that loses a party waits this long for its
        # reply (30 s dropped a slow but living party from round 1 once, when CI's load
        # delayed its ClientApp)
        "run_config": {"n-test": 200, "n-reference": 100, "round-timeout": 60.0},
    }
    with world.client("fa-al") as al:
        fid = int(ok(al.post(FED, json=body))["id"])
    for slug in TEMPLATE_PARTIES:
        with world.client("fa-ann") as ann:
            ok(ann.post(f"{FED}/{fid}/invitations", json={"org": slug}), 201, 409)
        with world.client(PARTIES[slug]) as admin:
            ok(admin.post(f"{FED}/{fid}/accept", json={"data_folder": "inspection"}))
    with world.client("fa-al") as al:
        run = ok(al.post(f"{FED}/{fid}/runs", json={}), 202)
        # SIGKILL to one party's SuperNode after the first round: the minimum of two is met
        wait_for(
            lambda: ok(al.get(f"{FED}/{fid}/runs/{run['id']}"))["rounds"],
            timeout=300,
            interval=1,
            what="a first round",
        )
        pids = supernode_pids(world, fid, "fedgamma")
        assert pids, "no SuperNode of fedgamma"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        done = wait_run(al, fid, run["id"], timeout=900)
        assert done["status"] == "finished", done["message"]
        assert done["secure_aggregation"] is True
        assert [r["round"] for r in done["rounds"]] == [1, 2, 3]
        assert done["rounds"][0]["parties"] == 3 and done["rounds"][-1]["parties"] == 2
        assert "macro_f1" in done["rounds"][-1]["metrics"]
        assert done["model"]["name"] == "fa-al~federation-inspection"
    # each party's local metrics in its own experiment: every round of the two that stayed
    for slug in TEMPLATE_PARTIES:
        with world.client(PARTIES[slug]) as admin:
            mine = ok(admin.get(f"{FED}/{fid}/runs/{run['id']}"))["party_mlflow"]
            assert mine is not None, slug
            trained = len(metric_history(admin, mine["run_id"], "local_loss"))
            # the killed party trained round 1 (and perhaps 2 before the SIGKILL), not 3
            assert trained == 3 if slug != "fedgamma" else 1 <= trained < 3, (slug, trained)
    with world.client("fg-gus") as gus:  # the killed party's organisation gets the model too
        got = gus.get(f"{MLFLOW}/registered-models/get", params={"name": done["model"]["name"]})
        assert got.status_code == 200, got.text


def test_the_owner_stops_a_run_and_nothing_is_registered(world: World) -> None:
    fid = create(world, "tiny-stop", rounds=20)
    for slug in ("fedbeta", "fedgamma"):
        accept(world, fid, slug)
    with world.client("fa-al") as al:
        run = ok(al.post(f"{FED}/{fid}/runs", json={"run_config": {"round-pause": 2.0}}), 202)
        again = al.post(f"{FED}/{fid}/runs", json={})
        assert again.status_code == 409 and "still going" in again.json()["detail"]
        with world.client("fb-bob") as bob:  # a party does not stop the owner's run
            assert bob.post(f"{FED}/{fid}/runs/{run['id']}/stop").status_code == 403
        stopped = ok(al.post(f"{FED}/{fid}/runs/{run['id']}/stop"))
        assert stopped["status"] == "stopped" and "fa-al" in stopped["message"]
        assert stopped["model"] is None and stopped["ended"] is not None
        twice = al.post(f"{FED}/{fid}/runs/{run['id']}/stop")
        assert twice.status_code == 409 and "ended already" in twice.json()["detail"]
        info = stopped["mlflow"]
        got = ok(al.get(f"{MLFLOW}/runs/get", params={"run_id": info["run_id"]}))
        assert got["run"]["info"]["status"] == "KILLED"
    wait_for(
        lambda: not supernode_pids(world, fid, "fedbeta"),
        timeout=60,
        what="fedbeta's SuperNode to stop",
    )


def test_a_revoked_party_is_refused_and_a_restart_keeps_all_but_the_run_it_cut(
    world: World,
) -> None:
    """One restart of werkhub for both: a federation with a revoked party keeps its
    parties, CA and keys; a run going on in another federation ends failed and its
    party's booking goes back."""
    fid = create(world, "tiny-keep")
    for slug in ("fedbeta", "fedgamma"):
        accept(world, fid, slug)
    parties = world.hub.state / "federations" / str(fid) / "parties"
    key = {p: p.read_bytes() for p in (parties / "fedbeta").rglob("*.pub")}
    assert key
    with world.client("fa-al") as al:
        before = ok(al.get(f"{FED}/{fid}/flwr-config"))
        ok(al.post(f"{FED}/{fid}/revoke", json={"org": "fedgamma"}))
        refused = al.post(f"{FED}/{fid}/runs", json={})
        assert refused.status_code == 409 and "at least 2" in refused.json()["detail"]
    with world.client("fg-gil") as gil:
        again = gil.post(f"{FED}/{fid}/accept", json={"data_folder": "fed-data"})
        assert again.status_code == 409 and "revoked" in again.json()["detail"]
    cut = create(world, "tiny-restart", rounds=30)
    for slug in ("fedbeta", "fedgamma"):
        accept(world, cut, slug, gpus=1 if slug == "fedbeta" else 0)
    with world.client("fa-al") as al:
        run = ok(al.post(f"{FED}/{cut}/runs", json={"run_config": {"round-pause": 2.0}}), 202)
        wait_for(
            lambda: ok(al.get(f"{FED}/{cut}/runs/{run['id']}"))["rounds"],
            timeout=240,
            interval=1,
            what="a first round",
        )
    world.hub.stop()
    world.hub.start()
    with world.client("fa-al") as al:
        fed = ok(al.get(f"{FED}/{fid}"))
        assert {p["org"]: p["state"] for p in fed["parties"]} == {
            "fedbeta": "accepted",
            "fedgamma": "revoked",
        }
        after = ok(al.get(f"{FED}/{fid}/flwr-config"))
        assert after["ca_certificate"] == before["ca_certificate"]
        ended = ok(al.get(f"{FED}/{cut}/runs/{run['id']}"))
        assert ended["status"] == "failed" and "restarted" in ended["message"]
        assert ended["model"] is None
    assert {p: p.read_bytes() for p in (parties / "fedbeta").rglob("*.pub")} == key
    with world.client("fb-bob") as bob:  # its booking went back
        assert not [
            b
            for b in ok(bob.get(f"{API}/bookings"))
            if b.get("user") == "fb-bob" and b["state"] == "active"
        ]


def test_a_model_that_cannot_be_shared_is_not_left_registered(world: World, tmp_path: Path) -> None:
    """The final model registered, then sharing it with the parties' organisations fails
    (MLflow's permission store away, say): the version is withdrawn, so no party's
    registry shows a model the others cannot read, and an earlier shared version stays."""
    import asyncio
    import json

    from werkhub.errors import Upstream
    from werkhub.federation import rules
    from werkhub.federation.runlog import RunLog
    from werkhub.federation.tracking import Clients

    np.savez(tmp_path / "model.npz", w=np.zeros(3))
    final_json = {"rounds": 1, "metrics": {}, "classes": ["a"], "model": "model.npz"}
    (tmp_path / "final.json").write_text(json.dumps(final_json))
    final = rules.parse_final((tmp_path / "final.json").read_text())
    fed = {"owner": "fa-al", "owner_org": "fedacme", "name": "unshared"}
    name = rules.model_name("fa-al", "unshared")

    async def token_of(user: str) -> str:
        return world.tokens[user]

    async def share_fails(model: str, orgs: list[str]) -> None:
        raise Upstream(f"MLflow's permission store is away: {model} not shared with {orgs}")

    async def shares(model: str, orgs: list[str]) -> None:
        return None

    async def register(share: Any) -> dict[str, Any]:
        clients = Clients(f"{world.hub.url}/services/mlflow", token_of)
        try:
            owner = await clients.of("fa-al")
            experiment = await owner.experiment("fa-al/federation-unshared")
            run_id, artifacts = await owner.start_run(experiment, "run-1", {}, {})
            run = {"mlflow": {"run_id": run_id, "artifact_uri": artifacts}, "parties": ["fedbeta"]}
            return await RunLog(None, clients, share).register(fed, run, tmp_path, final)  # type: ignore[arg-type]
        finally:
            await clients.aclose()

    def versions() -> list[str] | None:
        """The model's versions in the owner's registry, None when there is no model."""
        with world.client("fa-al") as al:
            found = ok(
                al.get(f"{MLFLOW}/registered-models/search", params={"filter": f"name = '{name}'"})
            ).get("registered_models", [])
            if not found:
                return None
            listed = ok(
                al.get(f"{MLFLOW}/model-versions/search", params={"filter": f"name = '{name}'"})
            )
        return sorted(v["version"] for v in listed.get("model_versions", []))

    with pytest.raises(Upstream, match="permission store is away"):
        asyncio.run(register(share_fails))
    assert versions() is None  # the model it made is gone with its only version
    assert asyncio.run(register(shares)) == {"name": name, "version": "1"}
    with pytest.raises(Upstream):
        asyncio.run(register(share_fails))
    assert versions() == ["1"]  # version 2 withdrawn, the shared version 1 kept


@pytest.fixture
def owner_home() -> Iterator[Path]:
    """A FLWR_HOME for the owner's uid where that uid can reach it (pytest's own temporary
    folders are root's alone)."""
    home = Path(tempfile.mkdtemp(prefix="wh-owner-flwr-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_owners_own_flwr_run_becomes_a_run_of_the_federation(
    world: World, owner_home: Path
) -> None:
    """The owner runs ``flwr run`` as themselves (their uid) with the issued configuration:
    werkhub takes the run up as one of the federation's (the parties' SuperNodes start, the
    rounds show, the model is registered and shared) and says who started it."""
    fid = create(world, "tiny-own")
    for slug in ("fedbeta", "fedgamma"):
        accept(world, fid, slug)
    home = owner_home
    with world.client("fa-al") as al:
        issued = ok(al.get(f"{FED}/{fid}/flwr-config", params={"flwr_home": str(home)}))
    folder = world.hub.state / "federations" / str(fid)
    uid = (folder / "link" / "superlink.db").stat().st_uid  # the owner's, in their sandbox
    assert uid != 0
    shutil.copytree(TINY, home / "tinyapp")
    (home / "config.toml").write_text(issued["config_toml"])
    (home / "ca.pem").write_text(issued["ca_certificate"])
    for root, dirs, files in os.walk(home):
        for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(entry, uid, uid)
    flower_bin = ROOT / ".venv-flower" / "bin"
    started = subprocess.run(
        [
            *("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"),
            *(str(flower_bin / "flwr"), "run", str(home / "tinyapp"), issued["connection"]),
            *("--run-config", "round-pause=1.0", "--format", "json"),
        ],
        env={
            "PATH": f"{flower_bin}:/usr/bin:/bin",
            "HOME": str(home),
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "NO_COLOR": "1",
        },
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0 and '"success": true' in started.stdout, (
        started.stdout + started.stderr
    )
    flower_id = int(json.loads(started.stdout)["run-id"])
    with world.client("fa-al") as al:
        runs = wait_for(
            lambda: ok(al.get(f"{FED}/{fid}/runs")) or None,
            timeout=60,
            interval=1,
            what="werkhub to take up the owner's flwr run",
        )
        (run,) = runs
        assert run["flower_run_id"] == flower_id and run["started_by"] == "fa-al"
        assert "with flwr run" in run["message"]
        done = wait_run(al, fid, run["id"])
        assert done["status"] == "finished", done["message"]
        assert [r["parties"] for r in done["rounds"]] == [2, 2, 2]  # the app's 3 rounds
        assert done["model"]["name"] == "fa-al~federation-tiny-own"
    with world.client("fg-gus") as gus:  # shared with the parties' organisations
        got = gus.get(f"{MLFLOW}/registered-models/get", params={"name": done["model"]["name"]})
        assert got.status_code == 200, got.text
