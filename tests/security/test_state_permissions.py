"""The state folder is werkhub's alone: files 0600, folders 0700, checked at start-up.

A real ``werkhub up`` on a state folder that an older werkhub (or a careless restore) left
readable by everyone; then what the hub, the service and MLflow write while running.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.test_mlflow_auth import mlflow_as
from tests.support.hub import ROOT, Werkhub, processes_in, write_config
from werkhub.config.paths import StatePaths
from werkhub.config.permissions import DIR_MODE, FILE_MODE, TRAVERSE_MODE, wanted_mode

pytestmark = pytest.mark.hub

KEY = "ab" * 32
WERKHUB_UP = [sys.executable, "-m", "werkhub.cli.main", "up"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def outside_homes(state: Path) -> Iterator[Path]:
    homes = state / "homes"
    for folder, dirs, files in os.walk(state):
        here = Path(folder)
        if here == homes:
            dirs[:] = []  # each home is the spawner's
            continue
        for name in dirs + files:
            path = here / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                continue
            yield path


def seed_readable_state(state: Path) -> dict[str, Path]:
    """What an older werkhub left: everything world-readable, a secret among it."""
    (state / "secrets").mkdir(parents=True)
    (state / "mlflow").mkdir()
    (state / "logs").mkdir()
    (state / "homes" / "olduser").mkdir(parents=True)
    seeded = {
        "key": state / "secrets" / "mlflow-gateway-key",
        "log": state / "logs" / "old.log",
        "script": state / "extra" / "deep" / "hook.sh",
        "home_file": state / "homes" / "olduser" / "notes.txt",
    }
    seeded["script"].parent.mkdir(parents=True)
    seeded["key"].write_text(KEY)
    seeded["log"].write_text("an old log\n")
    seeded["script"].write_text("#!/bin/sh\n")
    seeded["home_file"].write_text("mine\n")
    for folder in (state, state / "secrets", state / "mlflow", state / "extra", state / "homes"):
        os.chmod(folder, 0o777)
    os.chmod(state / "homes" / "olduser", 0o755)
    for name in ("key", "log", "home_file"):
        os.chmod(seeded[name], 0o644)
    os.chmod(seeded["script"], 0o755)
    return seeded


def umask_of(pid: str) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return None


def test_up_repairs_a_readable_state_folder_and_keeps_it_private(
    fresh_werkhub: Werkhub, tmp_path: Path
) -> None:
    hub = fresh_werkhub
    seeded = seed_readable_state(hub.state)
    hub.start()
    token = hub.create_user("perm-ann")
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"\0" * 4096)
    with mlflow_as(hub, token) as client:  # MLflow writes its store and an artifact
        run = client.create_run(client.create_experiment("perm-ann/private"))
        client.log_artifact(run.info.run_id, str(blob))
    added = hub.cli("users", "add", "perm-ben")
    assert added.returncode == 0, added.stderr

    # the secret was repaired in place, not replaced
    assert seeded["key"].read_text() == KEY and mode(seeded["key"]) == FILE_MODE
    assert mode(seeded["log"]) == FILE_MODE
    assert mode(seeded["script"]) == 0o700  # an executable stays executable, for its owner
    assert mode(hub.state) == TRAVERSE_MODE and mode(hub.state / "homes") == TRAVERSE_MODE
    # inside homes/ is the spawner's business
    assert mode(seeded["home_file"]) == 0o644
    assert mode(hub.state / "homes" / "olduser") == 0o755

    written = {p.name for p in outside_homes(hub.state)}
    for expected in ("jupyterhub.sqlite", "users.sqlite", "mlflow.db", "auth.db", "weights.bin"):
        assert expected in written, expected
    wrong = []
    for path in outside_homes(hub.state):
        if path == hub.state / "homes":
            continue  # 0711, checked above
        want = DIR_MODE if path.is_dir() else FILE_MODE
        have = mode(path)
        if have & ~0o100 != want & ~0o100 or have & 0o077:
            wrong.append(f"{have:o} {path.relative_to(hub.state)}")
    assert not wrong, "state entries others may read:\n" + "\n".join(wrong)

    # the hub, its services and MLflow all run with umask 077
    pids = [line.split(":", 1)[0] for line in _processes_of(hub)]
    assert len(pids) >= 3, pids
    lax = []
    for line in _processes_of(hub):
        umask = umask_of(line.split(":", 1)[0]) or 0
        # the proxy too: werkhub sets ConfigurableHTTPProxy.command_umask to 077
        if umask & 0o077 != 0o077:
            lax.append(f"{umask:03o} {line}")
    assert not lax, lax


def _processes_of(hub: Werkhub) -> list[str]:
    return [p for p in processes_in(hub.state) if "homes" not in p.split(":", 1)[1]]


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_up_refuses_a_readable_state_file_it_cannot_repair() -> None:
    """werkhub runs as ``nobody``; a world-readable file of root's lies in its state.

    (``nobody`` keeps only CAP_DAC_READ_SEARCH, to reach a Python that may live under
    /root; it may not change modes of files it does not own.)"""
    top = Path(tempfile.mkdtemp(prefix="werkhub-perms-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        state = top / "state"
        (state / "secrets").mkdir(parents=True)
        foreign = state / "secrets" / "copied-from-backup"
        foreign.write_text("secret\n")
        os.chmod(foreign, 0o644)
        for folder in (state, state / "secrets"):
            os.chown(folder, 65534, 65534)
        config = top / "werkhub.yaml"
        write_config(config)
        os.chmod(config, 0o644)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        as_nobody += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        done = subprocess.run(
            [*as_nobody, *WERKHUB_UP, "--state", str(state), "--config", str(config)],
            cwd=top,
            env={"PATH": os.environ["PATH"], "HOME": str(top)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
        assert "cannot make it private" in done.stderr and str(foreign) in done.stderr
        assert "Traceback" not in done.stderr
        assert mode(foreign) == 0o644  # nothing else happened: no hub, no lock, no database
        assert not (state / "jupyterhub.sqlite").exists() and not (state / "werkhub.lock").exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_wanted_modes() -> None:
    assert wanted_mode(stat.S_IFREG | 0o644) == 0o600
    assert wanted_mode(stat.S_IFREG | 0o755) == 0o700
    assert wanted_mode(stat.S_IFDIR | 0o755) == 0o700
    assert wanted_mode(stat.S_IFDIR | 0o755, traverse=True) == 0o711
    assert StatePaths.at(ROOT).homes.name == "homes"
