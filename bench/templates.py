"""Benchmark of the starter templates.

Prints, for every template at default parameters: the papermill wall time (kernel start
included), the time the notebook itself measured, the time spent in MLflow calls and its share
of the wall time (goal: below 5 %), and the MLflow import time, which is reported apart. Then
the heat solver's throughput in cell updates per second: PyTorch on the CPU, PyTorch on CUDA
when there is a GPU, and a NumPy implementation of the same scheme, measured in the same run.

Usage: python bench/templates.py [--solver-only] [--templates SLUG ...] [--settings N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


@contextmanager
def mlflow_server(state: Path) -> Iterator[str]:
    """A local tracking server (SQLite, local artifacts) for the duration of the benchmark."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", "1", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}"),
        *("--artifacts-destination", str(state / "artifacts")),
    ]
    env = {**os.environ, **QUIET, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (state / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.3)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


def bench_notebooks(slugs: list[str] | None) -> None:
    import papermill

    sys.path.insert(0, str(ROOT / "hub"))
    from werkhub.images.templates import discover_templates

    templates = [t for t in discover_templates(TEMPLATES) if not slugs or t.slug in slugs]

    print("Templates at default parameters (papermill, python3 kernel of this interpreter)")
    header = f"{'template':32} {'wall s':>7} {'notebook s':>10} {'mlflow s':>9} {'share':>6}"
    print(f"{header} {'import s':>9}  gates")
    with tempfile.TemporaryDirectory() as tmp, mlflow_server(Path(tmp)) as uri:
        os.environ.update({**QUIET, "MLFLOW_TRACKING_URI": uri})
        for template in templates:
            slug = template.slug
            results_path = Path(tmp) / f"{slug}.json"
            start = time.perf_counter()
            papermill.execute_notebook(
                str(template.notebook_path),
                str(Path(tmp) / f"{slug}.ipynb"),
                parameters={
                    "results_path": str(results_path),
                    "mlflow_experiment": f"bench-{slug}",
                },
                kernel_name="python3",
                cwd=str(template.folder),
                progress_bar=False,
            )
            wall = time.perf_counter() - start
            results = json.loads(results_path.read_text())
            timings, metrics = results["timings"], results["metrics"]
            gate_text = ", ".join(
                f"{g.metric}={metrics[g.metric]:.4g} {g.op} {g.value:g}: "
                + ("ok" if g.passes(metrics[g.metric]) else "FAILED")
                for g in template.spec.gates
            )
            budget = "ok" if wall <= 60 else "OVER the 60 s budget"
            print(
                f"{slug:32} {wall:7.1f} {timings['total_s']:10.1f} {timings['mlflow_s']:9.2f} "
                f"{timings['mlflow_s'] / wall:6.1%} {timings['mlflow_import_s']:9.2f}  {gate_text}"
                f"; runtime {budget}"
            )


def bench_solver(settings: int, cells: int, repeat: int) -> None:
    sys.path.insert(0, str(TEMPLATES / "heat-treatment-twin"))
    import heat
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    params = heat.sample_parameters(settings, seed=0)
    warm = {name: values[:16] for name, values in params.items()}
    print(
        f"\nHeat solver: {settings} process settings, {cells} x {2 * cells} cells each, "
        f"explicit steps until every core reaches 300 degC (best of {repeat})"
    )
    runs: dict[str, heat.Solution] = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        heat.solve(warm, cells=cells, device=device)
        runs[f"torch {device}"] = max(
            (heat.solve(params, cells=cells, device=device) for _ in range(repeat)),
            key=lambda s: s.cell_updates_per_s,
        )
    heat.solve_numpy(warm, cells=cells)
    runs["numpy"] = max(
        (heat.solve_numpy(params, cells=cells) for _ in range(repeat)),
        key=lambda s: s.cell_updates_per_s,
    )
    reference = runs["numpy"]
    for name, solution in runs.items():
        agree = np.max(np.abs(solution.times_s / reference.times_s - 1))
        ratio = solution.cell_updates_per_s / reference.cell_updates_per_s
        print(
            f"  {name:11} {solution.cell_updates_per_s:10.3g} cell updates/s  "
            f"{solution.seconds:7.3f} s  {ratio:6.2f} x numpy  (max deviation {agree:.1e})"
        )
    gpu = torch.cuda.get_device_name() if "cuda" in devices else "none"
    print(f"  (torch CPU threads: {torch.get_num_threads()}; GPU: {gpu})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver-only", action="store_true", help="skip the notebooks")
    parser.add_argument("--templates", nargs="*", help="slugs (default: all)")
    parser.add_argument("--settings", type=int, default=512, help="solver batch size")
    parser.add_argument("--cells", type=int, default=8, help="cells across half the thickness")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.solver_only:
        bench_notebooks(args.templates)
    bench_solver(args.settings, args.cells, args.repeat)


if __name__ == "__main__":
    main()
