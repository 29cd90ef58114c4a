"""``werkhub up`` after it had to kill its hub: the proxy and services (sessions of their
own) are ended too, and nothing outside the state folder is touched. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
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


ADOPTER = """
import os, subprocess, time
from werkhub.app.reap import become_subreaper, children, end_children
assert become_subreaper()
# a 'hub' that starts a 'service' in a session of its own and exits without ending it
hub = subprocess.run(
    ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"],
    capture_output=True, text=True, check=True,
)
orphan = int(hub.stdout)
deadline = time.monotonic() + 10
while orphan not in children() and time.monotonic() < deadline:
    time.sleep(0.05)
adopted = orphan in children()
ended = end_children(grace=5)
gone = not os.path.exists(f"/proc/{orphan}")  # ended and collected: not even a zombie
print(orphan, adopted, gone, *ended, flush=True)
"""


def test_what_an_ended_hub_left_is_adopted_and_ended() -> None:
    """``werkhub up`` is the subreaper of the hub: a process the hub started in a session
    of its own becomes its child when the hub exits, and is ended and collected."""
    out = subprocess.run(
        [sys.executable, "-c", ADOPTER], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    orphan, adopted, gone, *ended = out.stdout.split()
    assert adopted == "True" and gone == "True" and ended == [orphan]
