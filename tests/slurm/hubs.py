"""A real ``werkhub up`` with ``spawner.kind: slurm`` against the private cluster, for the
spawner and jobs tests and ``bench/spawn_slurm.py``.

Jobs run as OS users (whs-alice, ...) who cannot enter /root, where this machine's
Python lives (pyenv). :func:`node_python` makes a Python they can run: the same
interpreter hard-linked under the cluster's folder, with a virtual environment whose
``lib`` is werkhub's own virtual environment's (the same packages). A
real site gives ``slurm.python`` an installation on shared storage instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.slurm.cluster import CPU_PARTITION, SlurmCluster
from tests.slurm.support import PARTITION
from tests.support.hub import ROOT, Werkhub, make_werkhub
from werkhub.config.schema import SlurmUserMapping
from werkhub.slurm import users

#: the OS users of these tests (whs-alice, ...): their own, so that another session's
#: tests, which make and remove wh-alice and wh-bob, cannot pull them away mid-test
MAPPING = SlurmUserMapping(mode="prefix", prefix="whs-")

POLICIES = {
    "default": {
        "gpu_hours_per_week": 1000,
        "max_booking_hours": 48,
        "max_advance_days": 60,
        "max_concurrent_gpus": 8,
    }
}


def node_python(root: Path) -> tuple[str, dict[str, str]]:
    """A Python every OS user may run, with werkhub's packages, and the environment it
    needs (see the module's note)."""
    own = Path(sys.prefix)
    base = Path(sys.base_prefix).resolve()
    if not str(base).startswith("/root/") and not str(own.resolve()).startswith("/root/"):
        return sys.executable, {}  # already reachable by everyone
    copy, venv = root / "node-python-base", root / "node-python"
    if not (venv / "bin" / "python").exists():
        # hard links: the same files (the same interpreter, 2 s), outside /root
        subprocess.run(["cp", "-al", str(base), str(copy)], check=True)
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").symlink_to(copy / "bin" / Path(sys.executable).resolve().name)
        (venv / "lib").symlink_to(own / "lib")
        (venv / "share").symlink_to(own / "share")  # the python3 kernel's spec
        (venv / "pyvenv.cfg").write_text(
            f"home = {copy / 'bin'}\ninclude-system-site-packages = false\n"
        )
        for folder in (root, copy, venv, venv / "bin"):
            folder.chmod(0o755)
    # the interpreter's own library path (RUNPATH) points into /root
    return str(venv / "bin" / "python"), {"LD_LIBRARY_PATH": str(copy / "lib")}


@contextmanager
def os_users(*hub_users: str, mapping: SlurmUserMapping = MAPPING) -> Iterator[dict[str, str]]:
    """Hub user -> OS user (made with werkhub's own ``useradd`` path, removed after)."""
    made, found = [], {}
    for hub_user in hub_users:
        name = users.os_name(hub_user, mapping)
        if not users.exists(name):
            made.append(name)
        found[hub_user] = users.ensure(hub_user, mapping, create=True)
    try:
        yield found
    finally:
        for name in made:
            subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


def slurm_settings(cluster: SlurmCluster, **more: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "conf": str(cluster.conf),
        "partition": PARTITION,
        "cpu_partition": CPU_PARTITION,
        "user_mapping": MAPPING.model_dump(),
        "reconcile_seconds": 5,
        "retry_seconds": 20,
        "python": node_python(cluster.root)[0],
        **more,
    }


def slurm_werkhub(
    tmp: Path, cluster: SlurmCluster, extra: dict[str, Any] | None = None, **slurm: Any
) -> Werkhub:
    """A started ``werkhub up`` whose servers are Slurm jobs (``extra`` merged in)."""
    config: dict[str, Any] = {
        "slurm": slurm_settings(cluster, **slurm),
        "spawner": {
            "kind": "slurm",
            "start_timeout": 120,
            "environment": node_python(cluster.root)[1],
        },
        "booking": {"policies": POLICIES},
        "services": {"mlflow": {"enabled": False}},
        **(extra or {}),
    }
    hub = make_werkhub(tmp, config)
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    return hub


def job_of(cluster: SlurmCluster, os_user: str, timeout: float = 30) -> dict[str, str]:
    """The one job of ``os_user`` that waits or runs, as ``scontrol -o show job`` fields."""
    deadline = time.monotonic() + timeout
    while True:
        # pending, configuring or running: a job of an earlier test may still complete
        out = cluster.run("squeue", "-h", "-u", os_user, "-t", "PD,CF,R", "-o", "%i")
        out = out.stdout.split()
        if len(out) == 1:
            return cluster.job(out[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs of {os_user}: {out}\n{cluster.logs()}")
        time.sleep(0.2)


def job_env(job_id: str) -> dict[str, str]:
    """The environment of the user server that Slurm job ``job_id`` runs (its process,
    found through /proc: the server's own environment, as Slurm gave it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes().decode(errors="replace")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if env.get("SLURM_JOB_ID") == job_id and b"jupyterhub.singleuser" in cmdline:
            env["_UID"] = str(os.stat(entry).st_uid)
            return env
    raise AssertionError(f"no server process of Slurm job {job_id}")


__all__ = ["MAPPING", "ROOT", "job_env", "job_of", "node_python", "os_users", "slurm_werkhub"]
