"""The ServerApp: the owner's side of a federation.

It fixes the feature scaling from the owner's unlabelled reference images, sends the global
model to the parties each round, aggregates their updates with the strategy of the run
config (``fedavg``, ``fedprox`` or ``fedadam``), with **SecAgg+** (Flower's
``SecAggPlusWorkflow``) when ``secure-aggregation`` is true, and evaluates the global model
after every round on the owner's mixed held-out test set (generated from ``seed``, or
``surfaces.npz`` in ``test-dir``: the owner's own data, never sent anywhere).

Files, into ``$WERKHUB_FEDERATION_OUT/<run id>/`` (without that variable, into
``<out-dir>/<run id>/`` or a temporary folder): ``rounds.jsonl`` (a line per finished round),
``final.json`` and ``model.npz`` when the run finished, ``error.json`` when it did not.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAdam, FedAvg, FedProx, Strategy
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from fedinspect import data, model, task
from fedinspect.referee import CountingGrid, DropoutTolerantSecAggPlus, Referee, RunEnded

STRATEGIES = ("fedavg", "fedprox", "fedadam")


def run_folder(context: Context) -> Path:
    base = os.environ.get("WERKHUB_FEDERATION_OUT") or str(
        task.run_config(context).get("out-dir", "")
    )
    folder = Path(base or tempfile.mkdtemp(prefix="fedinspect-")) / str(context.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_strategy(
    config: dict[str, Any], initial: list[np.ndarray], scaling: task.Scaling
) -> Strategy:
    name = str(config.get("strategy", "fedavg")).lower()
    if name not in STRATEGIES:
        raise RunEnded(f"unknown strategy {name!r}; this app offers {', '.join(STRATEGIES)}")
    min_parties = int(config.get("min-parties", 2))
    mu = float(config.get("proximal-mu", 0.01)) if name == "fedprox" else 0.0
    lr, decay = float(config.get("learning-rate", 0.05)), float(config.get("lr-decay", 0.92))
    instructions = {
        **scaling.to_config(),
        "local-epochs": int(config.get("local-epochs", 1)),
        "batch-size": int(config.get("batch-size", 32)),
        "image-size": int(config.get("image-size", 32)),
        "proximal-mu": mu,
    }
    common: dict[str, Any] = {
        "fraction_fit": 1.0,
        "fraction_evaluate": 0.0,
        "min_fit_clients": min_parties,
        "min_evaluate_clients": min_parties,
        "min_available_clients": min_parties,
        "initial_parameters": ndarrays_to_parameters(initial),
        "on_fit_config_fn": lambda rnd: {
            **instructions,
            "server-round": rnd,
            "learning-rate": task.round_learning_rate(lr, decay, rnd),
        },
        "accept_failures": True,
    }
    if name == "fedprox":
        return FedProx(proximal_mu=mu, **common)
    if name == "fedadam":
        lr = float(config.get("server-learning-rate", 0.05))
        return FedAdam(eta=lr, eta_l=lr, tau=1e-3, **common)
    return FedAvg(**common)


def write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(value, indent=1), encoding="utf-8")
    partial.replace(path)


def federate(grid: Grid, context: Context, folder: Path) -> None:
    config = task.run_config(context)
    rounds = int(config.get("num-server-rounds", 40))
    min_parties = int(config.get("min-parties", 2))
    if min_parties < 2:
        raise RunEnded("a federation needs at least 2 parties (min-parties)")
    size, noise, seed = (
        int(config.get("image-size", 32)),
        float(config.get("noise", 0.04)),
        int(config.get("seed", 0)),
    )
    scaling = task.Scaling.from_images(
        data.make_reference_images(int(config.get("n-reference", 400)), size, seed, noise)
    )
    if str(config.get("test-dir", "")):  # the owner's own test images
        test_images, test_labels = data.load_party(str(config["test-dir"]), size)
    else:
        test_images, test_labels = data.make_test_set(
            int(config.get("n-test", 800)), size, seed, noise
        )
    x_test = task.standardised(test_images, scaling)
    hidden = int(config.get("hidden", 64))
    initial = model.to_list(task.new_model(hidden, seed))

    def evaluate(arrays: list[np.ndarray]) -> tuple[float, dict[str, float]]:
        result = task.scores(model.from_list(arrays), x_test, test_labels)
        return result.pop("loss"), result

    record_to = folder / "recorded" if bool(config.get("record-messages", False)) else None
    counting = CountingGrid(grid, record_to)
    referee = Referee(
        make_strategy(config, initial, scaling),
        counting,
        folder,
        min_parties,
        float(config.get("wait-seconds", 60.0)),
        evaluate,
    )
    secure = bool(config.get("secure-aggregation", False))
    fit_workflow = None
    if secure:
        fit_workflow = DropoutTolerantSecAggPlus(
            num_shares=float(config.get("secagg-num-shares", 1.0)),
            reconstruction_threshold=float(config.get("secagg-threshold", 0.67)),
            max_weight=float(config.get("secagg-max-weight", 100000.0)),
            timeout=float(config.get("round-timeout", 300.0)),
        )
    timeout = float(config.get("round-timeout", 300.0))
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
        strategy=referee,
    )
    DefaultWorkflow(fit_workflow=fit_workflow)(counting, legacy)
    if referee.finished_rounds != rounds or referee.last_parameters is None:
        raise RunEnded(f"the run stopped after {referee.finished_rounds} of {rounds} rounds")
    arrays = model.from_list(referee.last_parameters)
    np.savez(folder / "model.npz", **arrays, feature_mean=scaling.mean, feature_scale=scaling.scale)
    write_json(
        folder / "final.json",
        {
            "rounds": rounds,
            "metrics": referee.last_metrics,
            "classes": list(task.model_classes()),
            "model": "model.npz",
            "strategy": str(config.get("strategy", "fedavg")),
            "secure_aggregation": secure,
        },
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    folder = run_folder(context)
    try:
        federate(grid, context, folder)
    except RunEnded as ended:
        write_json(folder / "error.json", {"message": str(ended)})
        raise
    except Exception as error:
        message = f"the server app failed: {type(error).__name__}: {error}"
        write_json(folder / "error.json", {"message": message})
        raise
