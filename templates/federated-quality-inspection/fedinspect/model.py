"""The classifier: a small multilayer perceptron on image features, in plain numpy.

Its parameters are a dict of named float32 arrays (what travels in Flower's messages, in the
order of :data:`NAMES`): ``w1`` (features x hidden), ``b1``, ``w2`` (hidden x classes), ``b2``.
Training is mini-batch gradient descent with momentum on the cross-entropy, with an optional
proximal term ``mu / 2 * |theta - theta_global|^2`` (FedProx). Weights are kept inside
``[-limit, limit]`` so that secure aggregation's fixed-point range (SecAgg+ clips at 8) never
cuts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAMES: tuple[str, ...] = ("w1", "b1", "w2", "b2")
LIMIT = 4.0

Params = dict[str, np.ndarray]


def init_params(n_features: int, n_hidden: int, n_classes: int, seed: int) -> Params:
    """Small random weights (He initialisation), zero biases; the same seed, the same model."""
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((n_features, n_hidden)) * np.sqrt(2 / n_features)).astype(
            np.float32
        ),
        "b1": np.zeros(n_hidden, np.float32),
        "w2": (rng.standard_normal((n_hidden, n_classes)) * np.sqrt(1 / n_hidden)).astype(
            np.float32
        ),
        "b2": np.zeros(n_classes, np.float32),
    }


def to_list(params: Params) -> list[np.ndarray]:
    return [params[name] for name in NAMES]


def from_list(arrays: list[np.ndarray]) -> Params:
    if len(arrays) != len(NAMES):
        raise ValueError(f"expected {len(NAMES)} arrays, got {len(arrays)}")
    return {name: np.asarray(a, np.float32) for name, a in zip(NAMES, arrays, strict=True)}


def n_weights(params: Params) -> int:
    return sum(int(a.size) for a in params.values())


def _forward(params: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = hidden @ params["w2"] + params["b2"]
    return hidden, logits


def predict_proba(params: Params, x: np.ndarray) -> np.ndarray:
    """Class probabilities (n, classes) of standardised features x (n, features)."""
    _, logits = _forward(params, np.asarray(x, np.float64))
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def log_loss(params: Params, x: np.ndarray, y: np.ndarray) -> float:
    p = predict_proba(params, x)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over ``n_classes`` (a class absent from both counts as 0)."""
    scores = []
    for k in range(n_classes):
        tp = float(np.sum((y_pred == k) & (y_true == k)))
        fp = float(np.sum((y_pred == k) & (y_true != k)))
        fn = float(np.sum((y_pred != k) & (y_true == k)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    proximal_mu: float = 0.0


def train(
    params: Params, x: np.ndarray, y: np.ndarray, config: TrainConfig, seed: int
) -> tuple[Params, float]:
    """Train a copy of ``params`` on (x, y); returns it and the mean training loss."""
    rng = np.random.default_rng(seed)
    anchor = {k: v.astype(np.float64) for k, v in params.items()}
    theta = {k: v.copy() for k, v in anchor.items()}
    velocity = {k: np.zeros_like(v) for k, v in theta.items()}
    n_classes = theta["b2"].shape[0]
    onehot = np.eye(n_classes)[y]
    x = np.asarray(x, np.float64)
    total, seen = 0.0, 0
    for _ in range(config.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            xb, tb = x[idx], onehot[idx]
            hidden, logits = _forward(theta, xb)
            logits = logits - logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            total += float(-np.log(np.clip((p * tb).sum(1), 1e-12, None)).sum())
            seen += len(idx)
            d_logits = (p - tb) / len(idx)
            d_hidden = (d_logits @ theta["w2"].T) * (hidden > 0)
            grads = {
                "w2": hidden.T @ d_logits,
                "b2": d_logits.sum(0),
                "w1": xb.T @ d_hidden,
                "b1": d_hidden.sum(0),
            }
            for k, g in grads.items():
                g = g + config.weight_decay * theta[k]
                if config.proximal_mu:
                    g = g + config.proximal_mu * (theta[k] - anchor[k])
                velocity[k] = config.momentum * velocity[k] - config.learning_rate * g
                theta[k] = np.clip(theta[k] + velocity[k], -LIMIT, LIMIT)
    trained = {k: v.astype(np.float32) for k, v in theta.items()}
    return trained, total / max(seen, 1)
