"""Exercises of the federated-learning course. Spoiler warning: the solutions are in this file."""

from __future__ import annotations

import numpy as np

from werkhub_widgets.coursekit import Course, close

course = Course("federated-quality-inspection-course", namespace={"np": np})
check, hint, solution, reference = course.check, course.hint, course.solution, course.reference


def _mixes() -> dict[str, object]:
    return {
        "party_counts": np.array([60, 52, 3, 5]),
        "pooled_counts": np.array([180, 60, 58, 62]),
    }


@course.exercise(
    "non_iid",
    "How different is a party's data?",
    answer="distance",
    hint=(
        "Turn both counts into shares (divide by their sum), then take half the sum of the "
        "absolute differences: the total variation distance, 0 for the same mix, 1 for "
        "nothing in common."
    ),
    solution="""
party_share = party_counts / party_counts.sum()
pooled_share = pooled_counts / pooled_counts.sum()
distance = 0.5 * np.abs(party_share - pooled_share).sum()
""",
    example=_mixes,
)
def _non_iid(distance: float, party_counts: np.ndarray, pooled_counts: np.ndarray) -> str | None:
    p = party_counts / party_counts.sum()
    q = pooled_counts / pooled_counts.sum()
    expected = 0.5 * np.abs(p - q).sum()
    if abs(float(distance) - 2 * expected) < 1e-9:
        return "almost: the total variation distance is half the sum of the differences"
    if abs(float(distance) - 0.5 * np.abs(party_counts - pooled_counts).sum()) < 1e-9:
        return "compare shares, not counts: divide each by its total first"
    return close(distance, expected, rel=1e-6, what="distance")


def _updates() -> dict[str, object]:
    rng = np.random.default_rng(5)
    return {"updates": [rng.standard_normal(6) for _ in range(3)], "examples": [120, 40, 240]}


@course.exercise(
    "fedavg",
    "Federated averaging",
    answer="global_weights",
    hint=(
        "A weighted mean: multiply each party's weights by its number of examples, add them "
        "up, divide by the total number of examples."
    ),
    solution="""
global_weights = sum(n * w for n, w in zip(examples, updates)) / sum(examples)
""",
    example=_updates,
)
def _fedavg(
    global_weights: np.ndarray, updates: list[np.ndarray], examples: list[int]
) -> str | None:
    global_weights = np.asarray(global_weights, dtype=float)
    expected = sum(n * w for n, w in zip(examples, updates, strict=True)) / sum(examples)
    if global_weights.shape != expected.shape:
        return f"expected one array of shape {expected.shape}; got {global_weights.shape}"
    if np.allclose(global_weights, np.mean(updates, axis=0)) and len(set(examples)) > 1:
        return "that is the plain mean: weight each party by its number of examples"
    if np.allclose(global_weights, sum(n * w for n, w in zip(examples, updates, strict=True))):
        return "divide by the total number of examples"
    if not np.allclose(global_weights, expected, atol=1e-9):
        return "values differ from the example-weighted mean of the updates"
    return None


@course.exercise(
    "traffic",
    "What a round costs in traffic",
    answer="bytes_per_round",
    hint=(
        "Every party receives the global model and sends its update back: two copies of "
        "n_parameters values per party, bytes_per_value bytes each."
    ),
    solution="bytes_per_round = 2 * n_parties * n_parameters * bytes_per_value",
    example=lambda: {"n_parties": 3, "n_parameters": 3396, "bytes_per_value": 4},
)
def _traffic(
    bytes_per_round: float, n_parties: int, n_parameters: int, bytes_per_value: int
) -> str | None:
    expected = 2 * n_parties * n_parameters * bytes_per_value
    if abs(float(bytes_per_round) - expected / 2) < 1e-9:
        return "count both directions: the model goes out and the update comes back"
    if abs(float(bytes_per_round) - 2 * n_parties * n_parameters) < 1e-9:
        return "that counts values; each value takes bytes_per_value bytes"
    return close(bytes_per_round, expected, rel=1e-9, what="byte count")


def _masked() -> dict[str, object]:
    rng = np.random.default_rng(11)
    updates = [rng.standard_normal(5) for _ in range(3)]
    m01, m02, m12 = (rng.standard_normal(5) * 100 for _ in range(3))
    masked = [updates[0] + m01 + m02, updates[1] - m01 + m12, updates[2] - m02 - m12]
    return {"masked": masked}


@course.exercise(
    "secagg_sum",
    "What the aggregator can compute",
    answer="aggregate",
    hint=(
        "Each pairwise mask is added by one party and subtracted by the other: add up all "
        "masked vectors and the masks cancel."
    ),
    solution="aggregate = np.sum(masked, axis=0)",
    example=_masked,
)
def _secagg_sum(aggregate: np.ndarray, masked: list[np.ndarray]) -> str | None:
    aggregate = np.asarray(aggregate, dtype=float)
    expected = np.sum(masked, axis=0)
    if aggregate.shape != expected.shape:
        return f"expected one vector of shape {expected.shape}; got {aggregate.shape}"
    if np.allclose(aggregate, np.mean(masked, axis=0)):
        return "the masks cancel in the sum; the mean would divide by the number of parties"
    if not np.allclose(aggregate, expected, atol=1e-9):
        return "values differ from the sum of the masked vectors"
    return None


@course.exercise(
    "dropouts",
    "How many parties may drop out?",
    answer="may_drop",
    hint=(
        "The secret of a dropped party is rebuilt from the shares the others hold; that "
        "needs `threshold` shares out of `n_parties`. Everything above the threshold may go."
    ),
    solution="may_drop = n_parties - threshold",
    example=lambda: {"n_parties": 5, "threshold": 3},
)
def _dropouts(may_drop: float, n_parties: int, threshold: int) -> str | None:
    if abs(float(may_drop) - threshold) < 1e-9 and threshold != n_parties - threshold:
        return "that is how many must stay; how many may go?"
    return close(may_drop, n_parties - threshold, rel=1e-9, what="number of parties")
