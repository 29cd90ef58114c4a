"""Benchmark of federated training: the federated quality-inspection template's Flower app
(three parties, non-IID images) on werkhub's deployment engine against Flower's simulation
engine, in the same invocation, each with SecAgg+ off and on.

* **simulation**: ``python -m fedinspect.simulate`` (Flower's simulation engine, Ray, one
  virtual SuperNode per party, in .venv-flower);
* **deployment**: werkhub's ``FederationRuntime`` (a SuperLink with TLS and SuperNode
  authentication in the owner's bubblewrap sandbox, one SuperNode per party in its user's
  sandbox with a network of its own and a byte-counting relay), the run submitted with
  ``flwr run`` as the service does. Needs root and bubblewrap (as the federation tests).

Per setting: seconds per round (the ServerApp's ``rounds.jsonl``; median over rounds 2..R,
so that the first round's start-up shows apart), the first round, the whole run (submit to
finish; the simulation's includes Ray's start), and bytes per round and party: the message
content the ServerApp's grid counted (both engines) and, on the deployment engine, what went
through each party's relay (TLS and gRPC framing included). Ratios: deployment / simulation
and SecAgg+ on / off, measured in this run.

Usage: python bench/federation.py [--rounds 10] [--images 1200] [--engines simulation,deployment]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.support.flower import APP, run_flower  # noqa: E402

PARTIES = ("machine-builder", "supplier", "software-house")


@dataclass
class Result:
    engine: str
    secure: bool
    rounds: int
    round_s: float  # median seconds per round, rounds 2..R
    first_round_s: float
    total_s: float
    content_bytes_per_round_party: float
    relay_bytes_per_round_party: float | None = None
    macro_f1: float = 0.0
    per_round_s: list[float] = field(default_factory=list)


def flower(args: list[str], timeout: float) -> str:
    """The app in Flower's environment (tests/support/flower.py); its output, or an error."""
    done = run_flower(args, APP, timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed:\n{done.stdout[-3000:]}")
    return done.stdout


def summarise(
    engine: str, secure: bool, rows: list[dict[str, Any]], total_s: float, parties: int
) -> Result:
    seconds = [float(r["seconds"]) for r in rows]
    content = [(r["bytes_in"] + r["bytes_out"]) / r["parties"] for r in rows]
    return Result(
        engine=engine,
        secure=secure,
        rounds=len(rows),
        round_s=statistics.median(seconds[1:] or seconds),
        first_round_s=seconds[0],
        total_s=total_s,
        content_bytes_per_round_party=statistics.mean(content),
        macro_f1=float(rows[-1]["metrics"]["macro_f1"]),
        per_round_s=seconds,
    )


def prepare(root: Path, images: int) -> None:
    for party in PARTIES:
        out = root / party
        flower(
            [
                "-m",
                "fedinspect.data",
                "prepare",
                "--party",
                party,
                "--out",
                str(out),
                "--n",
                str(images),
            ],
            120,
        )


def simulation(secure: bool, rounds: int, data_root: Path, work: Path) -> Result:
    out = work / f"sim-{'secagg' if secure else 'plain'}"
    args = ["-m", "fedinspect.simulate", "--data-root", str(data_root), "--out", str(out)]
    config = {"num-server-rounds": rounds, "min-parties": 3}
    config["secure-aggregation"] = str(secure).lower()  # type: ignore[assignment]
    for key, value in config.items():
        args += ["--config", f"{key}={value}"]
    started = time.perf_counter()
    summary = json.loads(flower(args, 900).strip().splitlines()[-1])
    total = time.perf_counter() - started
    run_dir = Path(summary["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return summarise("simulation", secure, rows, total, len(PARTIES))


async def deployment(secure: bool, rounds: int, data_root: Path) -> Result:
    import numpy as np

    from tests.federation.runtime_world import THREE, runtime_world
    from werkhub.sandbox.prepare import uid_of

    async with runtime_world() as world:
        for slug, party in zip(THREE, PARTIES, strict=True):
            plan = world.party(slug)
            target = plan.data_folder / "surfaces.npz"
            with np.load(data_root / party / "surfaces.npz") as arrays:
                np.savez(target, images=arrays["images"], labels=arrays["labels"])
            uid = uid_of(world.settings, plan.user)
            os.chown(target, uid, uid)
        await world.start_three()
        before = world.runtime.traffic(world.plan.federation_id)
        config = {"num-server-rounds": rounds, "min-parties": 3, "secure-aggregation": secure}
        started = time.perf_counter()
        run_id = await world.runtime.submit(world.plan, APP, config)
        status = await world.wait_run(run_id, timeout=900)
        total = time.perf_counter() - started
        if status["status"] != "finished":
            raise RuntimeError(f"the deployment run ended {status}")
        after = world.runtime.traffic(world.plan.federation_id)
        rows = world.rounds(run_id)
        result = summarise("deployment", secure, rows, total, len(PARTIES))
        relayed = [
            after[s]["sent"]
            + after[s]["received"]
            - before.get(s, {}).get("sent", 0)
            - before.get(s, {}).get("received", 0)
            for s in THREE
        ]
        result.relay_bytes_per_round_party = statistics.mean(relayed) / max(len(rows), 1)
        return result


def kb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e3:8.1f}"


def report(results: list[Result]) -> dict[str, Any]:
    print(
        f"\n{'engine':<11} {'SecAgg+':<7} {'s/round':>8} {'round 1':>8} {'run s':>7} "
        f"{'kB/round/party':>15} {'relay kB':>9} {'macro-F1':>8}"
    )
    for r in results:
        print(
            f"{r.engine:<11} {'on' if r.secure else 'off':<7} {r.round_s:8.3f} "
            f"{r.first_round_s:8.2f} {r.total_s:7.1f} {kb(r.content_bytes_per_round_party):>15} "
            f"{kb(r.relay_bytes_per_round_party):>9} {r.macro_f1:8.3f}"
        )
    found = {(r.engine, r.secure): r for r in results}
    ratios: dict[str, Any] = {}
    print()
    for secure in (False, True):
        dep, sim = found.get(("deployment", secure)), found.get(("simulation", secure))
        if dep and sim:
            key = f"deployment_vs_simulation_{'secagg' if secure else 'plain'}"
            ratios[key] = {
                "round_s": dep.round_s / sim.round_s,
                "total_s": dep.total_s / sim.total_s,
                "content_bytes": dep.content_bytes_per_round_party
                / sim.content_bytes_per_round_party,
            }
            print(
                f"deployment / simulation, SecAgg+ {'on ' if secure else 'off'}: "
                f"{ratios[key]['round_s']:.2f}x per round, {ratios[key]['total_s']:.2f}x per "
                f"run, {ratios[key]['content_bytes']:.2f}x content bytes"
            )
    for engine in ("simulation", "deployment"):
        on, off = found.get((engine, True)), found.get((engine, False))
        if on and off:
            ratios[f"secagg_vs_plain_{engine}"] = {
                "round_s": on.round_s / off.round_s,
                "content_bytes": on.content_bytes_per_round_party
                / off.content_bytes_per_round_party,
            }
            r = ratios[f"secagg_vs_plain_{engine}"]
            print(
                f"SecAgg+ on / off, {engine}: {r['round_s']:.2f}x per round, "
                f"{r['content_bytes']:.2f}x content bytes"
            )
    return {"results": [asdict(r) for r in results], "ratios": ratios}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--images", type=int, default=1200, help="images per party")
    parser.add_argument("--engines", default="simulation,deployment")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "deployment" in engines and os.geteuid() != 0:
        print("the deployment engine needs root (sandboxes of other uids): skipped")
        engines.remove("deployment")
    print(
        f"federated quality inspection: {len(PARTIES)} parties x {args.images} images, "
        f"{args.rounds} rounds, engines: {', '.join(engines)}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        work = Path(tmp)
        prepare(work / "parties", args.images)
        for secure in (False, True):
            if "simulation" in engines:
                results.append(simulation(secure, args.rounds, work / "parties", work))
                print(f"  simulation, SecAgg+ {'on' if secure else 'off'}: done")
            if "deployment" in engines:
                results.append(asyncio.run(deployment(secure, args.rounds, work / "parties")))
                print(f"  deployment, SecAgg+ {'on' if secure else 'off'}: done")
    summary = report(results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
