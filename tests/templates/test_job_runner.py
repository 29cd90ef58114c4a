"""Job runs with real papermill kernels and a real MLflow server: output notebook and a
self-contained report in every case, the failing cell highlighted, per-cell timeouts, one
MLflow run per job run that the notebook's own start_run() continues, an engineer template
run as a job, and the ``python -m werkhub.jobs.run.execute`` entry point."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from tests.templates.conftest import QUIET_ENV, MlflowServer, template
from werkhub.jobs.run.notebook import RunOutcome, RunRequest, execute

NOTEBOOK_CELLS = [
    ("code", 'n = 3\nmode = "ok"\nlabel = "plant-a"', ["parameters"]),
    ("markdown", "# Shift report\nSome math: $x^2$", []),
    (
        "code",
        "import os\nimport matplotlib.pyplot as plt\nimport mlflow\n"
        "run = mlflow.start_run()\nmlflow.log_metric('score', n * 2)\n"
        "print('TOKEN', os.environ.get('MLFLOW_TRACKING_TOKEN'))\n"
        "print('RUN', os.environ.get('WERKHUB_RUN_ID'),"
        " 'GPU', os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
        "fig = plt.figure(); plt.plot([1, 2, n]); plt.show()",
        [],
    ),
    (
        "code",
        "import time\nif mode == 'fail':\n    raise RuntimeError('sensor file missing')\n"
        "if mode == 'slow':\n    time.sleep(60)",
        [],
    ),
    ("code", "mlflow.end_run()\nprint('done', label)", []),
]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "reports").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source, tags in NOTEBOOK_CELLS:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(source, metadata={"tags": tags}))
    nbformat.write(nb, home / "reports" / "shift.ipynb")
    return home


def request(home: Path, mlflow: MlflowServer | None, **changes: Any) -> RunRequest:
    values: dict[str, Any] = {
        "run_id": 7,
        "job_id": 3,
        "job_name": "Shift report",
        "owner": "alice",
        "notebook": home / "reports" / "shift.ipynb",
        "notebook_label": "reports/shift.ipynb",
        "cwd": home / "reports",
        "out_dir": home / ".werkhub-jobs" / "runs" / "7",
        "parameters": {"n": 5, "mode": "ok"},
        "cell_timeout_s": 30,
        "env": {
            "MLFLOW_TRACKING_URI": mlflow.uri if mlflow else "",
            "MLFLOW_TRACKING_TOKEN": "tok-alice",
            "CUDA_VISIBLE_DEVICES": "",
        },
        "mlflow_experiment": "alice-jobs",
    }
    return RunRequest(**{**values, **changes})


def output_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.append(out.get("evalue", ""))
    return "\n".join(texts)


def visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def assert_self_contained(page: str) -> None:
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)
    for cdn in ("cdnjs", "unpkg", "jsdelivr", "require.min.js", "MathJax.js", "mathjax@"):
        assert cdn not in page


def test_successful_run(home: Path, mlflow_server: MlflowServer) -> None:
    req = request(home, mlflow_server)
    before = dict(os.environ)
    outcome = execute(req)
    assert dict(os.environ) == before  # the job's identity did not leak into this process
    assert outcome.status == "succeeded" and outcome.error is None, outcome
    assert set(outcome.timings) == {"papermill_s", "report_s", "mlflow_s", "total_s"}
    assert outcome.timings["total_s"] >= outcome.timings["papermill_s"] > 0

    out = req.out_dir / "output.ipynb"
    text = output_text(out)
    assert "TOKEN tok-alice" in text and "RUN 7 GPU \n" in text + "\n" and "done plant-a" in text

    page = (req.out_dir / "report.html").read_text()
    assert_self_contained(page)
    assert "<h1>Shift report</h1>" in page and "werkhub-status-succeeded" in page
    assert "<th>n</th><td><code>5</code></td>" in page
    assert "<th>mode</th><td><code>'ok'</code></td>" in page
    assert "Started</th><td>" in page and "(UTC+0" in page and "Duration</th><td>" in page
    assert "data:image/png;base64," in page  # the plot is embedded
    assert 'class="highlight' not in page  # code hidden
    assert "mlflow.start_run" not in visible_text(page) and "plt.plot" not in visible_text(page)
    assert "done plant-a" in page

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(outcome.mlflow_run_id)
    sha = hashlib.sha256(req.notebook.read_bytes()).hexdigest()
    tags = run.data.tags
    assert (tags["werkhub.job_id"], tags["werkhub.run_id"]) == ("3", "7")
    assert tags["werkhub.notebook"] == "reports/shift.ipynb"
    assert tags["werkhub.notebook_sha256"] == sha and tags["werkhub.status"] == "succeeded"
    assert run.data.params == {"n": "5", "mode": "ok"}
    assert run.data.metrics == {"score": 10.0}  # logged by the notebook, in the job's run
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "alice-jobs"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "output.ipynb",
        "report.html",
    }
    runs = client.search_runs([run.info.experiment_id], "tags.`werkhub.run_id` = '7'")
    assert len(runs) == 1


def test_show_code_option(home: Path, mlflow_server: MlflowServer) -> None:
    req = request(home, mlflow_server, hide_code=False, title="Morning shift", env={})
    outcome = execute(req)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.mlflow_run_id is None  # no tracking URI
    page = (req.out_dir / "report.html").read_text()
    assert "<h1>Morning shift</h1>" in page and page.count('class="highlight') == 5
    assert "mlflow.start_run()" in visible_text(page) and "plt.plot" in visible_text(page)
    assert_self_contained(page)


def test_failing_cell_keeps_output_and_is_highlighted(
    home: Path, mlflow_server: MlflowServer
) -> None:
    req = request(home, mlflow_server, parameters={"mode": "fail"})
    outcome = execute(req)
    assert outcome.status == "failed"
    assert outcome.error == "In [4]: RuntimeError: sensor file missing"
    out = json.loads((req.out_dir / "output.ipynb").read_text())
    failed = out["cells"][outcome.failed_cell]
    assert "sensor file missing" in "".join(failed["source"])
    assert "TOKEN tok-alice" in output_text(req.out_dir / "output.ipynb")  # earlier cells kept

    page = (req.out_dir / "report.html").read_text()
    assert_self_contained(page)
    assert "werkhub-status-failed" in page and "sensor file missing" in page
    failed_divs = [
        tag for tag in re.findall(r"<div[^>]*>", page) if 'id="cell-id=werkhub-failed-cell"' in tag
    ]
    assert len(failed_divs) == 1 and "celltag_werkhub-failed" in failed_divs[0]
    assert 'href="#cell-id=werkhub-failed-cell"' in page
    # the failing cell shows its code (highlighted input), the others stay hidden
    failed_html = page.split('id="cell-id=werkhub-failed-cell"')[1].split("jp-Cell jp-")[0]
    assert 'class="highlight' in failed_html and page.count('class="highlight') == 1
    assert "plt.plot" not in visible_text(page)

    run = MlflowClient(mlflow_server.uri).get_run(outcome.mlflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["werkhub.status"] == "failed"


def test_cell_timeout(home: Path, mlflow_server: MlflowServer) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell("seconds = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import time\ntime.sleep(seconds)\nprint('slept')"),
        nbformat.v4.new_code_cell("print('never')"),
    ]
    nbformat.write(nb, home / "reports" / "slow.ipynb")
    req = request(
        home,
        mlflow_server,
        notebook=home / "reports" / "slow.ipynb",
        parameters={"seconds": 120},
        cell_timeout_s=3,
    )
    outcome = execute(req)
    assert outcome.status == "timed_out"
    assert outcome.error == (
        "cell 2 did not finish within the per-cell timeout of 3 s (cell_timeout_s); "
        "the run was stopped there"
    )
    assert outcome.timings["papermill_s"] < 60
    out = json.loads((req.out_dir / "output.ipynb").read_text())
    assert "time.sleep(seconds)" in "".join(out["cells"][outcome.failed_cell]["source"])
    assert "never" not in output_text(req.out_dir / "output.ipynb")
    page = (req.out_dir / "report.html").read_text()
    assert "werkhub-status-timed_out" in page and "celltag_werkhub-failed" in page
    run = MlflowClient(mlflow_server.uri).get_run(outcome.mlflow_run_id)
    assert run.info.status == "KILLED"


def test_mlflow_down_still_reports(home: Path, mlflow_server: MlflowServer) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    req = request(home, mlflow_server, env=env, parameters={"n": 1})
    outcome = execute(req)
    assert outcome.mlflow_run_id is None and outcome.mlflow_error
    assert (req.out_dir / "report.html").exists() and (req.out_dir / "output.ipynb").exists()


def test_engineer_template_runs_as_job(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    spec = template("predictive-maintenance")
    folder = tmp_path / "home" / "predictive-maintenance"
    shutil.copytree(spec.folder, folder)  # "Open a copy": the user's own copy in the home
    results = tmp_path / "results.json"
    params = {**spec.spec.smoke_parameters, "results_path": str(results)}
    req = RunRequest(
        run_id=11,
        job_id=4,
        job_name="Pump fleet",
        owner="alice",
        notebook=folder / spec.spec.notebook,
        cwd=folder,
        out_dir=tmp_path / "out",
        parameters=params,
        env={"MLFLOW_TRACKING_URI": mlflow_server.uri, **QUIET_ENV},
        mlflow_experiment="alice-pumps",
        cell_timeout_s=300,
    )
    outcome = execute(req)
    assert outcome.status == "succeeded", outcome.error
    summary = json.loads(results.read_text())
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert summary["mlflow"]["run_id"] == outcome.mlflow_run_id  # the notebook used our run
    assert "rmse" in run.data.metrics and run.data.params["n_units"] == "30"
    assert client.get_experiment(run.info.experiment_id).name == "alice-pumps"
    assert run.data.tags["werkhub.job_id"] == "4"
    page = (tmp_path / "out" / "report.html").read_text()
    assert_self_contained(page)
    assert "data:image/png;base64," in page


def test_execute_entry_point(home: Path, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    req = request(home, mlflow_server, parameters={"mode": "fail"})
    path = tmp_path / "request.json"
    path.write_text(req.model_dump_json())
    env = {**os.environ, **QUIET_ENV}
    command = [sys.executable, "-m", "werkhub.jobs.run.execute", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    result = RunOutcome.model_validate_json((req.out_dir / "result.json").read_text())
    assert result.status == "failed" and "sensor file missing" in (result.error or "")
    assert "run 7 failed" in done.stdout

    path.write_text(json.dumps({"run_id": 1}))
    bad = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "cannot read the run request" in bad.stderr
    assert "job_id" in bad.stderr


def test_tracking_over_http_needs_no_mlflow_import(home: Path, mlflow_server: MlflowServer) -> None:
    """The job's own MLflow calls go over REST (``import mlflow`` alone costs a second per
    run); the run still gets its tags, params, both artifacts and its final status."""
    req = request(home, mlflow_server, parameters={"n": 4})
    script = (
        "import json, sys\n"
        "from werkhub.jobs.run.notebook import RunRequest, execute\n"
        "outcome = execute(RunRequest.model_validate_json(sys.stdin.read()))\n"
        "print(json.dumps({'mlflow': 'mlflow' in sys.modules, 'run': outcome.mlflow_run_id,"
        " 'status': outcome.status, 'error': outcome.mlflow_error}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=req.model_dump_json(),
        capture_output=True,
        text=True,
        env={**os.environ, **QUIET_ENV},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["error"] is None, result
    assert result["mlflow"] is False  # fails when the runner imports the MLflow client

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(result["run"])
    assert run.info.status == "FINISHED" and run.info.run_name == "Shift report #7"
    assert run.data.params == {"n": "4"}
    assert run.data.metrics == {"score": 8.0}  # the notebook continued the job's run
    assert run.data.tags["werkhub.status"] == "succeeded"
    assert run.data.tags["werkhub.notebook"] == "reports/shift.ipynb"
    assert run.data.tags["mlflow.user"] == "alice"
    assert client.get_experiment(run.info.experiment_id).name == "alice-jobs"
    local = Path(client.download_artifacts(run.info.run_id, "report.html"))
    assert local.read_bytes() == (req.out_dir / "report.html").read_bytes()
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "output.ipynb",
        "report.html",
    }


def test_tracking_with_a_database_uri_uses_the_mlflow_client(home: Path, tmp_path: Path) -> None:
    """No tracking server (a database URI): the MLflow client does the work instead."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, **QUIET_ENV}
    req = request(home, None, env=env, parameters={"n": 2})
    outcome = execute(req)
    assert outcome.status == "succeeded" and outcome.mlflow_error is None, outcome
    client = MlflowClient(uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"score": 4.0}
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "output.ipynb",
        "report.html",
    }


def _kernel_that_dies(root: Path, name: str, deaths: int) -> None:
    """A kernelspec whose kernel exits at once the first ``deaths`` times it is started."""
    folder = root / "kernels" / name
    folder.mkdir(parents=True)
    starter = folder / "start.py"
    starter.write_text(
        "import pathlib, runpy, sys\n"
        f"count = pathlib.Path({str(folder / 'starts')!r})\n"
        "starts = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(starts + 1))\n"
        f"if starts < {deaths}:\n"
        "    sys.exit(1)\n"
        "sys.argv = ['ipykernel_launcher', *sys.argv[1:]]\n"
        "runpy.run_module('ipykernel_launcher', run_name='__main__')\n"
    )
    spec = {
        "argv": [sys.executable, str(starter), "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(("deaths", "status"), [(1, "succeeded"), (3, "failed")])
def test_a_kernel_that_dies_before_its_first_reply_is_started_again(
    home: Path,
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    deaths: int,
    status: str,
) -> None:
    """No cell ran, so the runner starts the kernel again (at most three starts in all)."""
    _kernel_that_dies(tmp_path / "jupyter", "flaky", deaths)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    outcome = execute(request(home, mlflow_server, kernel_name="flaky", parameters={"n": 1}))
    starts = int((tmp_path / "jupyter" / "kernels" / "flaky" / "starts").read_text())
    assert outcome.status == status, outcome.error
    if status == "succeeded":
        assert starts == 2
    else:
        assert starts == 3 and "before replying to kernel_info" in (outcome.error or "")
