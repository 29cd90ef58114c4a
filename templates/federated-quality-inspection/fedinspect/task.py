"""What the server, the clients and the notebook share: the feature scaling, turning a
party's images into standardised features, one round of local training, the scores."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedinspect import features, model

SIMULATION_CONFIG = "FEDINSPECT_RUN_CONFIG"


def run_config(context: Any) -> dict[str, Any]:
    """The run config: Flower's (pyproject defaults fused with the run's overrides); in the
    simulation engine's Python API, which has none, what ``simulate`` put in
    ``$FEDINSPECT_RUN_CONFIG``."""
    config = dict(context.run_config)
    if not config and os.environ.get(SIMULATION_CONFIG):
        config = json.loads(os.environ[SIMULATION_CONFIG])
    return config


@dataclass(frozen=True)
class Scaling:
    """Feature standardisation fixed by the owner from unlabelled reference images; it
    travels to the parties in each round's instructions (not in the trained parameters)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_images(cls, images: np.ndarray) -> Scaling:
        f = features.image_features(images)
        return cls(f.mean(0).astype(np.float32), (1 / (f.std(0) + 1e-6)).astype(np.float32))

    def apply(self, f: np.ndarray) -> np.ndarray:
        return (f - self.mean) * self.scale

    def to_config(self) -> dict[str, bytes]:
        return {"feature-mean": self.mean.tobytes(), "feature-scale": self.scale.tobytes()}

    @classmethod
    def from_config(cls, config: dict[str, object]) -> Scaling:
        mean = np.frombuffer(bytes(config["feature-mean"]), np.float32)  # type: ignore[arg-type]
        scale = np.frombuffer(bytes(config["feature-scale"]), np.float32)  # type: ignore[arg-type]
        if mean.shape != (features.N_FEATURES,) or scale.shape != mean.shape:
            raise ValueError("the feature scaling in the instructions has the wrong size")
        return cls(mean.copy(), scale.copy())


def standardised(images: np.ndarray, scaling: Scaling) -> np.ndarray:
    return scaling.apply(features.image_features(images))


def new_model(hidden: int, seed: int) -> model.Params:
    return model.init_params(features.N_FEATURES, hidden, len(model_classes()), seed)


def model_classes() -> tuple[str, ...]:
    from fedinspect import surfaces

    return surfaces.CLASSES


def scores(params: model.Params, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Loss, macro-F1 and accuracy of ``params`` on standardised features ``x``."""
    proba = model.predict_proba(params, x)
    pred = proba.argmax(1)
    loss = float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None)).mean())
    return {
        "loss": loss,
        "macro_f1": model.macro_f1(y, pred, proba.shape[1]),
        "accuracy": float((pred == y).mean()),
    }


def train_config(config: dict[str, object]) -> model.TrainConfig:
    """The local training settings from a round's instructions (defaults where absent)."""
    defaults = model.TrainConfig()
    return model.TrainConfig(
        epochs=int(config.get("local-epochs", defaults.epochs)),  # type: ignore[arg-type]
        batch_size=int(config.get("batch-size", defaults.batch_size)),  # type: ignore[arg-type]
        learning_rate=float(config.get("learning-rate", defaults.learning_rate)),  # type: ignore[arg-type]
        proximal_mu=float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
    )


def round_learning_rate(learning_rate: float, decay: float, server_round: int) -> float:
    """The local learning rate of a round: ``learning_rate * decay ** (round - 1)``."""
    return learning_rate * decay ** (server_round - 1)


def train_alone(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int,
    rounds: int,
    config: model.TrainConfig,
    decay: float,
    seed: int,
) -> model.Params:
    """A model trained on one body of data (pooled, or a single party's), from the same
    initial weights as the federation and with the same schedule: ``rounds`` times
    ``config.epochs`` passes at the round's learning rate."""
    params = new_model(hidden, seed)
    for server_round in range(1, rounds + 1):
        lr = round_learning_rate(config.learning_rate, decay, server_round)
        step = model.TrainConfig(
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        params, _ = model.train(params, x, y, step, 7919 * server_round + seed)
    return params
