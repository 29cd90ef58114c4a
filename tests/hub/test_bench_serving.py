"""The serving benchmark (bench/serving.py) runs end to end with tiny settings, so that it
cannot rot: a real werkhub, two registered scikit-learn versions, both paths at two
numbers of clients, a rollout under load. The cold starts are skipped (each waits about
a minute for the endpoint to scale to zero; tests/hub/test_serving.py covers them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hub import ROOT

pytestmark = pytest.mark.hub


def test_serving_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "serving.json"
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    tiny = ["--seconds", "0.5", "--rounds", "1", "--clients", "1,2", "--rollout-clients", "2"]
    tiny += ["--alias-poll", "1"]
    done = subprocess.run(
        [sys.executable, "bench/serving.py", *tiny, "--skip-cold", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result
    for level in ("1", "2"):
        for path in ("direct", "werkhub"):
            figures = result["latency"][level][path]
            assert figures["requests"] > 0 and figures["failed"] == 0, (level, path, figures)
            assert figures["p99_ms"] >= figures["p50_ms"] > 0
        assert result["latency"][level]["ratio"]["p99"] > 0
    rollout = result["rollout"]
    assert rollout["failed"] == 0, rollout
    assert rollout["switch_s"] is not None and rollout["requests"] > rollout["clients"]
    assert set(result["goals"]) == {"p99_ratio", "rollout_failed"}
    assert "cold" not in result
    for goal in ("p99 werkhub / direct at 2 clients", "failed requests during the rollout"):
        assert goal in done.stdout
