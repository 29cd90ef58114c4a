"""Jobs over HTTP against a real werkhub (hub, proxy, service, MLflow) with real papermill
kernels: validation, runs while the owner's server is stopped, failures with retries and
notifications (also by e-mail to a real local SMTP sink), privacy and sharing of reports,
GPU jobs on the simulated inventory, and a service killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import Werkhub, free_ports, make_werkhub, wait_run
from tests.support.notebooks import notebook
from tests.support.wait import wait_for
from werkhub.images.templates import discover_templates

pytestmark = pytest.mark.hub
ROOT = Path(__file__).resolve().parents[2]
API = "/services/werkhub/api"


NOTEBOOKS = {
    "reports/ok.ipynb": notebook(
        "total = sum(range(n))\nprint(f'{label}: {total}')",
        parameters="n = 3\nlabel = 'sum'",
    ),
    "fail.ipynb": notebook(
        "x = 1", "raise RuntimeError('sensor file missing')", parameters="n = 1"
    ),
    "slow.ipynb": notebook("import time\ntime.sleep(seconds)", parameters="seconds = 60"),
    "gpu.ipynb": notebook("import os\nprint('booking', os.environ.get('WERKHUB_BOOKING_ID'))"),
}


class SmtpSink(socketserver.ThreadingTCPServer):
    """A tiny SMTP server on 127.0.0.1 that keeps every message it receives."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.messages: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", port), SmtpHandler)


class SmtpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: SmtpSink = self.server  # type: ignore[assignment]
        self.wfile.write(b"220 sink ESMTP\r\n")
        rcpt: list[str] = []
        while line := self.rfile.readline():
            verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 sink\r\n")
            elif verb == "RCPT":
                rcpt.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    chunk = self.rfile.readline()
                    if not chunk:
                        return
                    data += chunk
                server.messages.append({"to": list(rcpt), "data": data.decode(errors="replace")})
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # MAIL, RSET, NOOP
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_ports(1)[0])
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    yield sink
    sink.shutdown()
    sink.server_close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpSink) -> Iterator[Werkhub]:
    extra: dict[str, Any] = {
        "gpus": {
            "simulated": True,
            "nodes": [{"name": "n1", "devices": [{"index": 0, "model": "L40S", "memory_gb": 48}]}],
        },
        "jobs": {
            "tick_seconds": 1,
            "max_concurrent": 2,
            "max_per_user": 2,
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp.server_address[1],
                "starttls": False,
                "address_template": "{user}@werk.test",
            },
        },
    }
    werkhub = make_werkhub(tmp_path_factory.mktemp("jobs"), extra)
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    werkhub.start()
    yield werkhub
    werkhub.stop()


@pytest.fixture(scope="module")
def tokens(hub: Werkhub) -> dict[str, str]:
    found = {name: hub.create_user(name) for name in ("ann", "ben")}
    with hub.admin() as api:
        assert api.post("/hub/api/groups/qa").status_code in (201, 409)
        assert api.post("/hub/api/groups/qa/users", json={"users": ["ben"]}).status_code == 200
    for name in found:
        home = hub.state / "homes" / name
        for rel, content in NOTEBOOKS.items():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_text(json.dumps(content))
    return found


def create(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post(f"{API}/jobs", json=body)


def test_bad_definitions_are_refused_with_the_field_and_nothing_is_stored(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    outside = hub.state.parent / "outside.ipynb"
    outside.write_text(json.dumps(NOTEBOOKS["fail.ipynb"]))
    link = hub.state / "homes" / "ann" / "link.ipynb"
    if not link.is_symlink():
        link.symlink_to(outside)
    ok = {"name": "bad", "notebook": "reports/ok.ipynb"}
    cases = [
        ({**ok, "parameters": {"n": "three"}}, "parameters.n", "expected"),
        ({**ok, "parameters": {"m": 1}}, "parameters.m", "label, n"),
        ({**ok, "schedule": {"kind": "cron", "cron": "61 * * * *"}}, "schedule.cron", "minute"),
        ({**ok, "schedule": {"kind": "cron", "cron": "0 6 * *"}}, "schedule.cron", ""),
        ({**ok, "schedule": {"kind": "cron", "cron": "0 6 * * *", "tz": "Mars/Base"}}, "tz", ""),
        ({**ok, "notebook": "../ben/reports/ok.ipynb"}, "notebook", ".."),
        ({**ok, "notebook": "/etc/x.ipynb"}, "notebook", "absolute"),
        ({**ok, "notebook": "link.ipynb"}, "notebook", "symbolic link"),
        ({**ok, "notebook": "missing.ipynb"}, "notebook", "does not exist"),
        ({**ok, "gpu": {"type": "Z9000"}}, "gpu.", "Z9000"),
        ({**ok, "retries": {"max": -1}}, "retries.max", ""),
        ({**ok, "colour": "red"}, "colour", "unknown"),
    ]
    with hub.client(tokens["ann"]) as api:
        for body, field, words in cases:
            reply = create(api, **body)
            assert reply.status_code == 422, (body, reply.text)
            detail = reply.json()["detail"]
            assert field in reply.json()["field"] or field in detail, (field, detail)
            assert words in detail, (words, detail)
        assert api.get(f"{API}/jobs").json() == []
        assert api.get(f"{API}/reports").json() == []
        preview = api.get(f"{API}/cron/preview", params={"cron": "0 6 * * 1-5"})
        assert preview.status_code == 200 and len(preview.json()["next"]) == 5
        bad = api.get(f"{API}/cron/preview", params={"cron": "0 25 * * *"})
        assert bad.status_code == 422 and "hour" in bad.json()["detail"]
        params = api.post(f"{API}/jobs/inspect", json={"notebook": "reports/ok.ipynb"}).json()
        assert params["parameters"] == [
            {"name": "n", "type": "int", "default": 3},
            {"name": "label", "type": "str", "default": "sum"},
        ]
        assert api.post(f"{API}/jobs/inspect", json={"notebook": "../x.ipynb"}).status_code == 422


def test_run_now_while_the_server_is_stopped_gives_notebook_report_and_mlflow_run(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    with hub.client(tokens["ann"]) as api:
        assert not api.get("/hub/api/users/ann").json()["servers"]  # no server running
        reply = create(
            api,
            name="sums",
            notebook="reports/ok.ipynb",
            parameters={"n": 10, "label": "ten"},
            schedule={"kind": "cron", "cron": "0 6 * * 1-5"},
            report={"title": "Daily sums"},
        )
        assert reply.status_code == 201, reply.text
        job = reply.json()
        assert job["owner"] == "ann" and len(job["next_runs"]) == 5 and not job["paused"]
        queued = api.post(f"{API}/jobs/{job['id']}/run")
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        run = wait_run(api, queued.json()["id"], {"succeeded", "failed", "timed_out"})
        assert run["status"] == "succeeded", api.get(f"{API}/runs/{run['id']}/log").text
        assert run["parameters"] == {"n": 10, "label": "ten"} and run["trigger"] == "manual"
        output = api.get(f"{API}/runs/{run['id']}/notebook").json()
        printed = json.dumps(output["cells"])
        assert "ten: 45" in printed
        report = api.get(run["report_url"].removeprefix(""))
        assert report.status_code == 200 and "Daily sums" in report.text
        assert "sandbox" in report.headers["content-security-policy"]
        assert "ten: 45" in report.text
        assert "cdn." not in report.text and '<script src="http' not in report.text
        (card,) = api.get(f"{API}/reports").json()
        assert card["run_id"] == run["id"] and card["title"] == "Daily sums"
        ml = api.get(
            "/services/mlflow/api/2.0/mlflow/runs/get", params={"run_id": run["mlflow_run_id"]}
        )
        assert ml.status_code == 200, ml.text
        data = ml.json()["run"]["data"]
        tags = {t["key"]: t["value"] for t in data["tags"]}
        assert tags["werkhub.job_id"] == str(job["id"])
        assert tags["werkhub.run_id"] == str(run["id"])
        assert tags["werkhub.notebook"].endswith("reports/ok.ipynb")
        assert len(tags["werkhub.notebook_sha256"]) == 64
        assert {p["key"]: p["value"] for p in data["params"]}["n"] == "10"
        assert tags["werkhub.status"] == "succeeded"
        listed = api.get(
            "/services/mlflow/api/2.0/mlflow/artifacts/list",
            params={"run_id": run["mlflow_run_id"]},
        )
        assert {f["path"] for f in listed.json()["files"]} == {"output.ipynb", "report.html"}
        stored = api.get(
            "/services/mlflow/get-artifact",
            params={"path": "report.html", "run_uuid": run["mlflow_run_id"]},
        )
        assert stored.status_code == 200 and stored.text == report.text
        run_dir = hub.state / "jobs" / "ann" / str(job["id"]) / str(run["id"])
        kept = json.loads((run_dir / "request.json").read_text())
        assert kept["env"]["MLFLOW_TRACKING_TOKEN"] == "(hidden)"  # no token left on disk
        assert (run_dir / "request.json").stat().st_mode & 0o077 == 0
        paused = api.post(f"{API}/jobs/{job['id']}/pause").json()
        assert paused["paused"] and paused["next_runs"] == []
        resumed = api.post(f"{API}/jobs/{job['id']}/resume").json()
        assert not resumed["paused"] and len(resumed["next_runs"]) == 5
        changed = api.patch(f"{API}/jobs/{job['id']}", json={"parameters": {"n": "x"}})
        assert changed.status_code == 422 and "parameters.n" in changed.json()["detail"]
        assert api.get(f"{API}/jobs/{job['id']}").json()["parameters"] == {"n": 10, "label": "ten"}
    where = ("--state", str(hub.state), "--config", str(hub.config))
    listed = hub.cli("jobs", "list", *where)
    assert listed.returncode == 0, listed.stderr
    assert f"{job['id']}\tann\tsums\t0 6 * * 1-5" in listed.stdout
    logs = hub.cli("jobs", "logs", str(run["id"]), *where, "--token", tokens["ann"])
    assert logs.returncode == 0 and f"run {run['id']} of job {job['id']}" in logs.stdout
    assert "succeeded" in logs.stdout
    paused = hub.cli("jobs", "pause", str(job["id"]), *where)
    assert paused.returncode == 0 and "paused" in paused.stdout
    other = hub.cli("jobs", "run", str(job["id"]), *where, "--token", tokens["ben"])
    assert other.returncode == 1 and "404" in other.stderr


def test_failing_notebook_keeps_its_output_is_retried_and_notifies(
    hub: Werkhub, tokens: dict[str, str], smtp: SmtpSink
) -> None:
    with hub.client(tokens["ann"]) as api:
        reply = create(
            api, name="broken", notebook="fail.ipynb", retries={"max": 1, "backoff_s": 1}
        )
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]

        def two_failed() -> list[dict[str, Any]] | None:
            runs = api.get(f"{API}/jobs/{job_id}/runs").json()
            return runs if len(runs) == 2 and all(r["status"] == "failed" for r in runs) else None

        runs = wait_for(two_failed, timeout=120, interval=0.5, what="two failed attempts")
        retry, first = runs
        assert (first["attempt"], retry["attempt"], retry["retry_of"]) == (1, 2, first["id"])
        for run in runs:
            assert "sensor file missing" in run["error"]
            assert run["failed_cell"] is not None and run["notebook_url"] and run["report_url"]
            kept = api.get(run["notebook_url"]).json()
            assert "sensor file missing" in json.dumps(kept["cells"][run["failed_cell"]])
            assert "sensor file missing" in api.get(run["report_url"]).text
        notes = [n for n in api.get(f"{API}/notifications").json() if n["kind"] == "job_failed"]
        assert (
            len(notes) == 1
            and "broken" in notes[0]["message"]
            and "2 attempts" in notes[0]["message"]
        )
        assert (notes[0]["job_id"], notes[0]["run_id"]) == (job_id, retry["id"])
    wait_for(lambda: smtp.messages, timeout=20, interval=0.2, what="the failure mail")
    (mail,) = [m for m in smtp.messages if "broken" in m["data"]]
    assert mail["to"] == ["ann@werk.test"] and "job failed" in mail["data"]


def test_other_users_get_404_and_shared_reports_become_visible(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    with hub.client(tokens["ann"]) as ann, hub.client(tokens["ben"]) as ben:
        job = create(ann, name="private", notebook="reports/ok.ipynb").json()
        runs = ann.get(f"{API}/jobs/{job['id']}/runs").json()
        run = wait_run(ann, runs[0]["id"], {"succeeded"})
        for path in (
            f"/jobs/{job['id']}",
            f"/jobs/{job['id']}/runs",
            f"/runs/{run['id']}",
            f"/runs/{run['id']}/log",
            f"/runs/{run['id']}/notebook",
            f"/reports/{run['id']}",
        ):
            assert ben.get(f"{API}{path}").status_code == 404, path
        for path in ("pause", "resume", "run"):
            assert ben.post(f"{API}/jobs/{job['id']}/{path}").status_code == 404, path
        assert ben.patch(f"{API}/jobs/{job['id']}", json={"name": "x"}).status_code == 404
        assert ben.delete(f"{API}/jobs/{job['id']}").status_code == 404
        refused = ben.post(f"{API}/reports/{run['id']}/share", json={"group": "qa"})
        assert refused.status_code == 404
        assert all(r["owner"] == "ben" for r in ben.get(f"{API}/reports").json())
        shared = ann.post(f"{API}/reports/{run['id']}/share", json={"group": "qa"})
        assert shared.status_code == 200 and shared.json()["shared_with"] == ["qa"]
        cards = ben.get(f"{API}/reports").json()
        assert [c["run_id"] for c in cards] == [run["id"]] and cards[0]["owner"] == "ann"
        assert ben.get(f"{API}/reports/{run['id']}").status_code == 200
        assert ben.get(f"{API}/runs/{run['id']}").status_code == 404  # the report only
        assert ann.delete(f"{API}/reports/{run['id']}/share/qa").status_code == 200
        assert ben.get(f"{API}/reports/{run['id']}").status_code == 404
        with hub.admin() as admin:
            assert any(j["owner"] == "ann" for j in admin.get(f"{API}/jobs?all=true").json())
            assert admin.get(f"{API}/reports/{run['id']}").status_code == 200


def test_gpu_job_books_a_simulated_gpu_and_releases_it(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    with hub.client(tokens["ben"]) as api:
        reply = create(api, name="gpu", notebook="gpu.ipynb", gpu={"type": "L40S", "minutes": 10})
        assert reply.status_code == 201, reply.text
        (queued,) = api.get(f"{API}/jobs/{reply.json()['id']}/runs").json()
        run = wait_run(api, queued["id"], {"succeeded", "failed"})
        assert run["status"] == "succeeded", run
        printed = json.dumps(api.get(run["notebook_url"]).json()["cells"])
        assert f"booking {run['booking_id']}" in printed
        booking = api.get(f"{API}/bookings/{run['booking_id']}").json()
        assert booking["user"] == "ben" and booking["state"] == "released"
        assert booking["gpu_type"] == "L40S" and booking["simulated"]


def test_the_same_template_as_a_job_of_two_users_lands_in_their_own_experiments(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    """MLflow experiment names are global and belong to their creator: each owner's
    template job goes to "OWNER/<template's experiment>" (as in their own server), so the
    second user is not refused the first one's experiment."""
    slug = "predictive-maintenance"
    (template,) = [t for t in discover_templates(ROOT / "templates") if t.slug == slug]
    smoke = dict(template.spec.smoke_parameters)
    runs = {}
    for name in ("ann", "ben"):
        with hub.client(tokens[name]) as api:
            reply = create(api, name="pumps", template=slug, parameters=smoke)
            assert reply.status_code == 201, reply.text
            (queued,) = api.get(f"{API}/jobs/{reply.json()['id']}/runs").json()
            runs[name] = queued["id"]
    seen = {}
    for name, run_id in runs.items():
        with hub.client(tokens[name]) as api:
            run = wait_run(api, run_id, {"succeeded", "failed", "timed_out"}, timeout=240)
            assert run["status"] == "succeeded", (run, api.get(f"{API}/runs/{run_id}/log").text)
            assert run["parameters"] == smoke
            report = api.get(run["report_url"])
            assert report.status_code == 200 and "werkhub-status-succeeded" in report.text
            assert "data:image/png;base64," in report.text  # the template's plots
            ml = api.get(
                "/services/mlflow/api/2.0/mlflow/runs/get",
                params={"run_id": run["mlflow_run_id"]},
            ).json()["run"]
            experiment = api.get(
                "/services/mlflow/api/2.0/mlflow/experiments/get",
                params={"experiment_id": ml["info"]["experiment_id"]},
            ).json()["experiment"]
            assert experiment["name"] == f"{name}/{slug}"
            metrics = {m["key"] for m in ml["data"]["metrics"]}
            assert "rmse" in metrics  # the notebook logged into the job's run
            seen[name] = run["mlflow_run_id"]
    with hub.client(tokens["ben"]) as ben:
        other = ben.get("/services/mlflow/api/2.0/mlflow/runs/get", params={"run_id": seen["ann"]})
        assert other.status_code in (403, 404)


def service_pid(hub: Werkhub) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if "werkhub.service.app" in cmd and cwd == str(hub.state.resolve()):
            return int(entry.name)
    raise AssertionError("werkhub service process not found")


def runner_pids(run_dir: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "werkhub.jobs.run.execute" in cmd and run_dir in cmd:
                found.append(int(entry.name))
    return found


def test_killing_the_service_mid_run_marks_it_interrupted_and_keeps_definitions(
    hub: Werkhub, tokens: dict[str, str]
) -> None:
    with hub.client(tokens["ann"]) as api:
        before = {j["id"] for j in api.get(f"{API}/jobs").json()}
        reply = create(
            api, name="slow", notebook="slow.ipynb", retries={"max": 1, "backoff_s": 3600}
        )
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]
        (queued,) = api.get(f"{API}/jobs/{job_id}/runs").json()
        run = wait_run(api, queued["id"], {"running"})
        run_dir = str(hub.state.resolve() / "jobs" / "ann" / str(job_id) / str(run["id"]))
        deadline = time.monotonic() + 20
        while not runner_pids(run_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner_pids(run_dir)
        time.sleep(2)
        old = service_pid(hub)
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the hub restarts its managed service
            try:
                if httpx.get(f"{hub.url}{API}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert service_pid(hub) != old
        after = wait_run(api, run["id"], {"interrupted"}, timeout=30)
        assert "stopped" in after["error"]
        assert {j["id"] for j in api.get(f"{API}/jobs").json()} == before | {job_id}
        retry = api.get(f"{API}/jobs/{job_id}/runs").json()[0]
        assert (retry["attempt"], retry["status"], retry["trigger"]) == (2, "queued", "retry")
        deadline = time.monotonic() + 15
        while runner_pids(run_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert runner_pids(run_dir) == []  # the orphaned kernel run was ended
        assert api.delete(f"{API}/jobs/{job_id}").status_code == 204
        assert api.get(f"{API}/runs/{retry['id']}").json()["status"] == "cancelled"
