"""``werkhub up`` after it had to kill its hub: the proxy and services (sessions of their
own) are ended too, and nothing outside the state folder is touched. Real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from werkhub.app.reap import processes_of, reap


def sleeper(cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sleep", "60"], cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True
    )


def test_processes_of_the_state_folder_are_ended_and_no_others(tmp_path: Path) -> None:
    state, beside = tmp_path / "state", tmp_path / "state2"  # a name sharing the prefix
    (state / "homes").mkdir(parents=True)
    beside.mkdir()
    inside = sleeper(state / "homes")  # works inside the state folder
    named = sleeper(tmp_path, {"WERKHUB_STATE": str(state)})  # a service started for it
    other = sleeper(beside, {"WERKHUB_STATE": str(beside)})  # another werkhub's
    try:
        assert sorted(processes_of(state)) == sorted([inside.pid, named.pid])
        assert sorted(reap(state, grace=5)) == sorted([inside.pid, named.pid])
        assert inside.wait(10) is not None and named.wait(10) is not None
        assert other.poll() is None and processes_of(state) == []
    finally:
        for proc in (inside, named, other):
            proc.kill()
            proc.wait()
