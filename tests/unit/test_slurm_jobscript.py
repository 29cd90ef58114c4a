"""werkhub's Slurm batch scripts as text: where a server or a job's run goes (the booking's
reservation and node, or the CPU partition), its time limit, its environment quoted, the
progress lines a person reads; the spawner's wiring from werkhub.yaml."""

from __future__ import annotations

import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from traitlets.config import Config

from werkhub.app.configurer import SPAWNER_CLASSES, apply_spawner
from werkhub.config.schema import WerkhubConfig
from werkhub.slurm import jobscript
from werkhub.slurm.jobscript import JobScript, Placement

NOW = datetime(2030, 1, 7, 9, 30, 20, tzinfo=UTC)


def place(devices: list[str], reserved: bool = True, booking_id: int | None = 7) -> Placement:
    return jobscript.placement(
        devices,
        booking_id=booking_id,
        gpu_type="A100-80GB",
        partition="gpu",
        cpu_partition="cpu",
        reserved=reserved,
        renames={"A100-80GB": "a100"},
    )


def test_a_whole_node_booking_runs_in_its_reservation_on_its_node() -> None:
    where = place(["node1/0", "node1/1"])
    assert where.options() == [
        "--partition=gpu",
        "--reservation=werkhub-b7",
        "--nodelist=node1",
        "--gres=gpu:a100:2",
    ]
    assert where.describe() == "2 a100 GPU(s) on node1 in reservation werkhub-b7"


def test_part_of_a_node_gets_its_gpus_by_gres_on_the_booked_node() -> None:
    where = place(["node3/1"], reserved=False)
    assert where.options() == ["--partition=gpu", "--nodelist=node3", "--gres=gpu:a100:1"]


def test_part_of_a_node_held_by_its_own_partition_runs_there() -> None:
    where = jobscript.placement(
        ["node3/1"], booking_id=9, gpu_type="a100", partition="gpu", cpu_partition="cpu",
        reserved=False, own_partition=True,
    )  # fmt: skip
    assert where.options() == ["--partition=werkhub-b9", "--nodelist=node3", "--gres=gpu:a100:1"]


def test_a_booking_over_nodes_runs_on_the_node_with_most_of_its_gpus() -> None:
    assert place(["node1/0", "node3/0", "node3/1"]).node == "node3"
    assert place(["node2/0", "node1/0"]).node == "node2"  # a tie: the first booked


def test_no_booking_is_the_cpu_partition_without_gpus() -> None:
    for where in (place([]), place(["node1/0"], booking_id=None)):
        assert where.options() == ["--partition=cpu"] and where.gpus == 0
        assert where.describe() == "CPU only, partition cpu"


def test_types_follow_slurms_names() -> None:
    assert jobscript.slurm_type("A100-80GB", {"A100-80GB": "a100"}) == "a100"
    assert jobscript.slurm_type("v100", {}) == "v100"
    assert jobscript.slurm_type("gpu", {}) == ""  # an untyped gres
    assert Placement(partition="p", node="n", gpus=1).options()[-1] == "--gres=gpu:1"


def test_time_limits() -> None:
    assert jobscript.minutes_until(NOW + timedelta(minutes=29, seconds=50), NOW) == 29
    assert jobscript.minutes_until(NOW - timedelta(minutes=5), NOW) == 1
    assert jobscript.minutes_for(60) == 1 and jobscript.minutes_for(61) == 2
    assert jobscript.minutes_for(0) == 1


def job(**changes: object) -> JobScript:
    values: dict[str, object] = {
        "name": "werkhub-alice",
        "command": ("/opt/py/bin/python", "-m", "jupyterhub.singleuser", "--debug"),
        "env": {"JUPYTERHUB_API_TOKEN": "t0k", "ODD": "it's $HOME `x`"},
        "workdir": "/home/wh-alice",
        "output": "/home/wh-alice/.werkhub/server-%j.log",
        "minutes": 29,
        "place": place(["node1/0"]),
        **changes,
    }
    return JobScript.model_validate(values)


def test_the_server_script_as_text() -> None:
    text = jobscript.script(job())
    assert text.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=werkhub-alice",
        "#SBATCH --partition=gpu",
        "#SBATCH --reservation=werkhub-b7",
        "#SBATCH --nodelist=node1",
        "#SBATCH --gres=gpu:a100:1",
        "#SBATCH --time=29",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --chdir=/home/wh-alice",
        "#SBATCH --output=/home/wh-alice/.werkhub/server-%j.log",
        "#SBATCH --export=NIL",
        "set -u",
        "export JUPYTERHUB_API_TOKEN=t0k",
        "export ODD='it'\"'\"'s $HOME `x`'",
        'echo "werkhub: job ${SLURM_JOB_ID} on ${SLURMD_NODENAME:-?} as $(id -un):'
        ' CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} SLURM_JOB_GPUS=${SLURM_JOB_GPUS:-}"',
        "exec /opt/py/bin/python -m jupyterhub.singleuser --debug",
    ]


def test_the_environment_reaches_the_shell_verbatim() -> None:
    text = jobscript.script(job(banner=False, command=("env",), env={"ODD": "it's $HOME `x`"}))
    exports = "\n".join(line for line in text.splitlines() if line.startswith("export "))
    out = subprocess.run(
        ["bash", "-c", f'{exports}\nprintf %s "$ODD"'], capture_output=True, text=True
    )
    assert out.stdout == "it's $HOME `x`"


def test_a_cpu_job_with_memory_and_cores() -> None:
    text = jobscript.script(job(place=place([]), mem="2048M", cpus=4, banner=False))
    assert "#SBATCH --partition=cpu\n#SBATCH --time=29" in text
    assert "--gres" not in text and "--reservation" not in text
    assert "#SBATCH --cpus-per-task=4\n#SBATCH --mem=2048M\n" in text


@pytest.mark.parametrize(
    "changes",
    [
        {"env": {"BAD NAME": "x"}},
        {"env": {"X; rm -rf /": "x"}},
        {"workdir": "/home/a\n#SBATCH --uid=root"},
    ],
)
def test_what_could_break_the_script_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        jobscript.script(job(**changes))


def test_bad_jobs_are_refused_by_the_model() -> None:
    with pytest.raises(ValidationError):
        job(minutes=0)
    with pytest.raises(ValidationError):
        job(command=())


def test_submission_and_commands() -> None:
    assert jobscript.submit_argv("wh-alice", "/tmp/x/server.sh") == [
        "sbatch", "--parsable", "--uid=wh-alice", "--gid=wh-alice", "/tmp/x/server.sh",
    ]  # fmt: skip
    assert jobscript.server_command("/py", ["--debug"]) == [
        "/py", "-m", "jupyterhub.singleuser", "--debug",
    ]  # fmt: skip
    assert shlex.join(jobscript.run_command("/py", "/r/request.json")) == (
        "/py -m werkhub.jobs.run.execute /r/request.json"
    )


def test_progress_lines_and_states() -> None:
    line = jobscript.progress_line
    assert line("5", "PENDING", "Resources", ()) == "Slurm job 5 is pending (Resources)"
    assert line("5", "PENDING", "", ()) == "Slurm job 5 is pending (waiting)"
    assert line("5", "RUNNING", "", ("node2",)) == "Slurm job 5 is running on node2"
    assert line("5", "FAILED", "NonZeroExitCode", ()) == (
        "Slurm job 5 ended: FAILED (NonZeroExitCode)"
    )
    assert jobscript.live("PENDING") and jobscript.live("RUNNING")
    assert not jobscript.live("CANCELLED by 0") and not jobscript.live("TIMEOUT")


def rt() -> SimpleNamespace:
    return SimpleNamespace(python="/venv/bin/python", jupyter_config_dir="/j", spawner_token="")


def test_the_slurm_spawner_is_wired_from_the_configuration() -> None:
    cfg = WerkhubConfig.model_validate(
        {
            "spawner": {"kind": "slurm"},
            "slurm": {
                "enabled": True,
                "conf": "/etc/slurm/slurm.conf",
                "partition": "gpu",
                "user_mapping": {"mode": "prefix", "prefix": "wh-"},
                "gpu_types": {"a100": {"model": "A100-80GB", "memory_gb": 80}},
                "server_minutes": 60,
            },
        }
    )
    c = Config()
    apply_spawner(cfg, c, rt())  # type: ignore[arg-type]
    assert c.JupyterHub.spawner_class == SPAWNER_CLASSES["slurm"]
    s = c.WerkhubSlurmSpawner
    assert (s.slurm_conf, s.partition, s.cpu_partition) == ("/etc/slurm/slurm.conf", "gpu", "cpu")
    assert s.user_mapping == {"mode": "prefix", "prefix": "wh-", "map": {}}
    assert s.gpu_renames == {"A100-80GB": "a100"}
    assert (s.python, s.server_minutes) == ("/venv/bin/python", 60)


def test_the_slurm_spawner_needs_slurm() -> None:
    with pytest.raises(ValidationError, match=r"needs slurm\.enabled"):
        WerkhubConfig.model_validate({"spawner": {"kind": "slurm"}})


def test_a_scheduled_runs_job_as_text() -> None:
    run = jobscript.run_job(
        run_id=12,
        owner="alice",
        python="/py/bin/python",
        stage="/home/wh-alice/.werkhub/jobs/run-12",
        cwd="/home/wh-alice/reports",
        deadline_s=302,
        place=place(["node3/0"], reserved=False),
        env={"HOME": "/home/wh-alice"},
    )
    text = jobscript.script(run)
    assert "#SBATCH --job-name=werkhub-run-12\n" in text
    assert "#SBATCH --nodelist=node3\n#SBATCH --gres=gpu:a100:1\n#SBATCH --time=6\n" in text
    assert "#SBATCH --chdir=/home/wh-alice/reports\n" in text
    assert "#SBATCH --output=/home/wh-alice/.werkhub/jobs/run-12/log.txt\n" in text
    assert "export HOME=/home/wh-alice\nexport JUPYTERHUB_USER=alice\n" in text
    assert text.endswith(
        "exec /py/bin/python -m werkhub.jobs.run.execute "
        "/home/wh-alice/.werkhub/jobs/run-12/request.json\n"
    )


def test_exit_codes() -> None:
    assert jobscript.exit_code("0:0") == 0
    assert jobscript.exit_code("1:0") == 1
    assert jobscript.exit_code("0:15") == 128 + 15
    assert jobscript.exit_code("") is None
