"""The files the federated quality-inspection app writes (the contract with werkhub's
service, docs in templates/federated-quality-inspection/README.md), from real runs in
Flower's simulation engine: a run that finishes writes rounds.jsonl, final.json, model.npz
and each party's local.jsonl; a run that cannot have its minimum number of parties ends with
error.json saying so in a sentence, and writes no final.json or model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.federation.test_secagg import APP, PARTIES, flower

ROUNDS = 2


def prepare(root: Path) -> Path:
    for party in PARTIES:
        done = flower(
            [
                *("-m", "fedinspect.data", "prepare", "--party", party),
                *("--out", str(root / party), "--n", "80"),
            ],
            APP,
            120,
        )
        assert done.returncode == 0, done.stdout
    return root


def simulate(data_root: Path, out: Path, **config: object) -> tuple[int, Path | None, str]:
    args = ["-m", "fedinspect.simulate", "--data-root", str(data_root), "--out", str(out)]
    settings = {"num-server-rounds": ROUNDS, "n-test": 60, "n-reference": 60, **config}
    for key, value in settings.items():
        args += ["--config", f"{key.replace('_', '-')}={value}"]
    done = flower(args, APP, 600)
    runs = [p for p in out.iterdir() if p.is_dir() and p.name != "parties"]
    return done.returncode, (runs[0] if len(runs) == 1 else None), done.stdout


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare(tmp_path_factory.mktemp("parties"))


@pytest.mark.parametrize("strategy", ["fedprox", "fedadam"])
def test_a_finished_run_writes_the_files_the_service_reads(
    data_root: Path, tmp_path: Path, strategy: str
) -> None:
    code, run_dir, log = simulate(data_root, tmp_path / "runs", strategy=f'"{strategy}"')
    assert code == 0 and run_dir is not None, log[-3000:]
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    for row in rounds:
        assert set(row) == {
            "round",
            "parties",
            "loss",
            "metrics",
            "bytes_in",
            "bytes_out",
            "seconds",
        }
        assert row["parties"] == 3 and row["loss"] > 0 and row["seconds"] > 0
        assert set(row["metrics"]) == {"macro_f1", "accuracy"}
        assert 0 <= row["metrics"]["macro_f1"] <= 1
        # the model travels as float32 both ways (3,396 parameters), plus little framing
        for direction in ("bytes_in", "bytes_out"):
            assert 3 * 4 * 3396 < row[direction] < 3 * (4 * 3396 + 2000)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["rounds"] == ROUNDS and final["model"] == "model.npz"
    assert final["classes"] == ["none", "scratch", "pit", "inclusion"]
    assert final["metrics"] == rounds[-1]["metrics"] and final["strategy"] == strategy
    with np.load(run_dir / final["model"]) as model:
        assert sorted(model.files) == ["b1", "b2", "feature_mean", "feature_scale", "w1", "w2"]
        assert model["w1"].shape == (48, 64) and model["w2"].shape == (64, 4)
    assert not (run_dir / "error.json").exists()
    for party in PARTIES:
        local = tmp_path / "runs" / "parties" / party / run_dir.name / "local.jsonl"
        lines = [json.loads(line) for line in local.read_text().splitlines()]
        assert [line["round"] for line in lines] == [1, 2]
        assert all(line["examples"] == 80 for line in lines)
        assert {"local_loss", "local_macro_f1"} <= set(lines[0]["metrics"])


def test_too_few_parties_end_the_run_with_a_sentence(data_root: Path, tmp_path: Path) -> None:
    code, run_dir, log = simulate(data_root, tmp_path / "runs", min_parties=4, wait_seconds=2)
    assert code != 0 and run_dir is not None, log[-3000:]
    error = json.loads((run_dir / "error.json").read_text())
    assert error == {
        "message": "only 3 parties were connected in round 1; this federation needs at least 4"
    }
    assert not (run_dir / "final.json").exists() and not (run_dir / "model.npz").exists()
