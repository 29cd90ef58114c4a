"""Run the app in Flower's simulation engine (Ray backend), offline, in one process tree.

    python -m fedinspect.simulate --data-root ROOT [--parties a,b,c] [--out OUT]
        [--config key=value ...] [--summary FILE]

``ROOT/<party>/surfaces.npz`` is each party's data (``python -m fedinspect.data prepare
--all --out ROOT``); ``--config`` overrides keys of ``[tool.flwr.app.config]`` in
pyproject.toml (values as TOML: ``num-server-rounds=5``, ``strategy="fedprox"``,
``secure-aggregation=true``). The ServerApp writes ``OUT/<run id>/`` (rounds.jsonl,
final.json, model.npz or error.json); ``--summary`` gets ``{"run_dir": ..., "seconds": ...}``.
Ray is started with its usage statistics and dashboard off; nothing phones home.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[1]


def default_config() -> dict[str, Any]:
    project = tomllib.loads((APP_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(project["tool"]["flwr"]["app"]["config"])


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config {pair!r}: expected key=value")
        overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedinspect.simulate", description=__doc__)
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--parties", default="machine-builder,supplier,software-house")
    parser.add_argument("--out", type=Path, default=Path("federated-runs"))
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--cpus", type=float, default=2.0, help="CPUs Ray may use")
    args = parser.parse_args(argv)
    parties = [p.strip() for p in args.parties.split(",") if p.strip()]
    config = {
        **default_config(),
        **parse_overrides(args.config),
        "sim-data-root": str(args.data_root.resolve()),
        "sim-parties": ",".join(parties),
        "out-dir": str(args.out.resolve()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["FEDINSPECT_RUN_CONFIG"] = json.dumps(config)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # the parties' and the owner's files go under --out unless werkhub set the folders
    os.environ.pop("WERKHUB_FEDERATION_OUT", None)
    os.environ.pop("WERKHUB_PARTY_OUT", None)
    os.environ.pop("WERKHUB_PARTY", None)

    from flwr.simulation import run_simulation

    from fedinspect.client_app import app as client_app
    from fedinspect.server_app import app as server_app

    before = {p for p in args.out.iterdir() if p.is_dir()}
    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(parties),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
        },
    )
    seconds = time.perf_counter() - started
    made = sorted({p for p in args.out.iterdir() if p.is_dir()} - before - {args.out / "parties"})
    summary = {"run_dir": str(made[-1]) if made else None, "seconds": seconds}
    if args.summary:
        args.summary.write_text(json.dumps(summary), encoding="utf-8")
    print(json.dumps(summary))
    return 0 if made and (made[-1] / "final.json").is_file() else 1


if __name__ == "__main__":
    sys.exit(main())
