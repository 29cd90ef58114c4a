"""Scheduled-job benchmark: what werkhub adds to a papermill report.

Runs the real scheduler (``werkhub.jobs.scheduler``) in this process on a fresh SQLite
database, with the local backend (``python -m werkhub.jobs.run.execute`` per run: papermill in
a real kernel, nbconvert HTML report, MLflow run with both files as artifacts) against a
real ``mlflow server`` on 127.0.0.1, and prints

1. per-report overhead: a werkhub job on a notebook that computes for 5 s (from queueing
   to the recorded outcome) against bare papermill (``python -m papermill``, same
   notebook, same parameters, same machine, interleaved); goal: ratio <= 1.3;
2. throughput of 20 small reports queued at once with max_concurrent = 2 (2 cores);
3. MLflow logging time per run (create run, params, tags, artifacts), from the runs.

    python bench/jobs.py [--quick]

Figures only, no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_support import free_port

from werkhub.app.configurer import SOVEREIGN_ENV
from werkhub.db import make_engines, upgrade
from werkhub.jobs.scheduler import Backend, Scheduler
from werkhub.jobs.spec import parse_spec
from werkhub.jobs.store import JobStore, Viewer

OWNER = Viewer("bench")


def notebook(source: str, parameters: str) -> dict:
    def cell(src: str, tags: list[str]) -> dict:
        meta = {"tags": tags}
        return {
            "cell_type": "code",
            "metadata": meta,
            "outputs": [],
            "source": src,
            "execution_count": None,
        }

    return {
        "cells": [cell(parameters, ["parameters"]), cell(source, [])],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


COMPUTE = notebook(
    "import time\nt = time.perf_counter()\nx = 0\n"
    "while time.perf_counter() - t < seconds:\n    x += sum(i * i for i in range(1000))\n"
    "print('computed', x)",
    "seconds = 5.0",
)
SMALL = notebook("print(sum(range(n)))", "n = 100")


def start_mlflow(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        env={**os.environ, **SOVEREIGN_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                return proc, uri
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def bare_papermill(home: Path, name: str, out: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(home / name),
            str(out),
            "-p",
            "seconds",
            "5.0",
            "--no-progress-bar",
            "-k",
            "python3",
        ],
        check=True,
        capture_output=True,
        cwd=home,
    )
    return time.monotonic() - started


class Bench:
    def __init__(self, folder: Path, mlflow_uri: str, max_concurrent: int) -> None:
        url = f"sqlite:///{folder / 'werkhub.sqlite'}"
        upgrade(url)
        writer, reader = make_engines(url)
        self.store = JobStore(writer, reader, folder / "runs")
        self.homes = folder / "homes"
        backend = Backend(kind="local", homes=self.homes, mlflow_uri=mlflow_uri)
        self.scheduler = Scheduler(
            self.store,
            backend,
            max_concurrent=max_concurrent,
            max_per_user=max_concurrent,
            tick_seconds=0.2,
        )

    def job(self, name: str, nb: str, **extra: object) -> int:
        spec = parse_spec(
            {
                "name": name,
                "notebook": nb,
                "schedule": {"kind": "cron", "cron": "0 6 * * *"},
                **extra,
            }
        )
        return self.store.create_job("bench", spec.model_dump(mode="json"), None, 0)["id"]

    async def run(self, job_id: int, count: int = 1) -> tuple[float, list[dict]]:
        started = time.monotonic()
        ids = [self.store.run_now(OWNER, job_id, time.time())["id"] for _ in range(count)]
        self.scheduler.wake()
        while True:
            runs = [self.store.get_run(OWNER, i) for i in ids]
            if all(r["status"] not in ("queued", "running", "waiting_gpu") for r in runs):
                return time.monotonic() - started, runs
            await asyncio.sleep(0.05)


async def main_async(quick: bool) -> None:
    rounds = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="werkhub-bench-jobs-") as tmp:
        folder = Path(tmp)
        mlflow, uri = start_mlflow(folder / "mlflow")
        try:
            bench = Bench(folder, uri, max_concurrent=2)
            home = bench.homes / "bench"
            home.mkdir(parents=True)
            (home / "compute.ipynb").write_text(json.dumps(COMPUTE))
            (home / "small.ipynb").write_text(json.dumps(SMALL))
            await bench.scheduler.start()
            compute = bench.job("compute", "compute.ipynb", parameters={"seconds": 5.0})
            small = bench.job("small", "small.ipynb")
            await bench.run(small)  # warm-up: imports, kernel spec, MLflow experiment

            bare, job, mlflow_s, parts = [], [], [], []
            for i in range(rounds):
                bare.append(bare_papermill(home, "compute.ipynb", folder / f"bare-{i}.ipynb"))
                wall, (run,) = await bench.run(compute)
                assert run["status"] == "succeeded", run
                job.append(wall)
                mlflow_s.append(run["timings"].get("mlflow_s", 0.0))
                parts.append(run["timings"])
            b, j = statistics.median(bare), statistics.median(job)
            print(
                "1. per-report overhead (notebook computing 5 s, median of "
                f"{rounds} interleaved rounds)"
            )
            print(f"   bare papermill (CLI subprocess): {b:6.2f} s")
            print(f"   werkhub job (queue+papermill+report+MLflow): {j:6.2f} s")
            print(f"   ratio: {j / b:.2f} (goal <= 1.3); overhead {j - b:+.2f} s per report")
            last = parts[-1]
            print("   inside the job: " + ", ".join(f"{k} {v:.2f} s" for k, v in last.items()))

            wall, runs = await bench.run(small, 20)
            ok = sum(r["status"] == "succeeded" for r in runs)
            print(
                "2. throughput: 20 small reports queued at once, max_concurrent=2, "
                f"{os.cpu_count()} cores"
            )
            print(
                f"   {wall:.1f} s for 20 ({ok} succeeded): {20 / wall * 60:.1f} reports/min, "
                f"{wall / 20:.2f} s per report"
            )
            small_ml = [r["timings"].get("mlflow_s", 0.0) for r in runs if r["timings"]]
            print("3. MLflow logging per run (create run, params, tags, 2 artifacts)")
            print(
                f"   5 s notebook: median {statistics.median(mlflow_s) * 1000:.0f} ms; "
                f"small reports: median {statistics.median(small_ml) * 1000:.0f} ms, "
                f"max {max(small_ml) * 1000:.0f} ms"
            )
            await bench.scheduler.stop()
        finally:
            mlflow.terminate()
            mlflow.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    asyncio.run(main_async(parser.parse_args().quick))


if __name__ == "__main__":
    main()
