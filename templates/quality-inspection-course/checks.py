"""Exercises of the quality-inspection course. Spoiler warning: the solutions are in this file."""

from __future__ import annotations

import numpy as np

from werkhub_widgets.coursekit import Course, close

course = Course("quality-inspection-course", namespace={"np": np})
check, hint, solution, reference = course.check, course.hint, course.solution, course.reference


def _images() -> dict[str, object]:
    rng = np.random.default_rng(3)
    return {"images": (0.3 + 0.4 * rng.random((20, 8, 8))).astype(np.float32)}


@course.exercise(
    "standardise",
    "Standardise the pixels",
    answer="standardised",
    hint="Subtract the mean of all pixels, divide by their standard deviation (np.mean, np.std).",
    solution="standardised = (images - images.mean()) / images.std()",
    example=_images,
)
def _standardise(standardised: np.ndarray, images: np.ndarray) -> str | None:
    standardised = np.asarray(standardised, dtype=float)
    if standardised.shape != images.shape:
        return f"keep the shape {images.shape}; got {standardised.shape}"
    if abs(standardised.mean()) > 1e-3:
        return f"the mean should be 0, it is {standardised.mean():.3f}"
    if abs(standardised.std() - 1) > 1e-3:
        return f"the standard deviation should be 1, it is {standardised.std():.3f}"
    expected = (images - images.mean()) / images.std()
    if not np.allclose(standardised, expected, atol=1e-4):
        return "use one mean and one standard deviation for all images, not one per image"
    return None


@course.exercise(
    "dark_spot",
    "A hand-made defect feature",
    answer="darkness",
    hint=(
        "For each image: np.median over the pixels minus the minimum pixel. Use axis=(1, 2) to "
        "reduce over the two image axes and keep one value per image."
    ),
    solution="darkness = np.median(images, axis=(1, 2)) - images.min(axis=(1, 2))",
    example=_images,
)
def _dark_spot(darkness: np.ndarray, images: np.ndarray) -> str | None:
    darkness = np.asarray(darkness, dtype=float)
    if darkness.shape != (len(images),):
        return f"expected one value per image, shape ({len(images)},); got {darkness.shape}"
    expected = np.median(images, axis=(1, 2)) - images.min(axis=(1, 2))
    if np.allclose(darkness, -expected, atol=1e-5):
        return "the sign is reversed: median minus minimum"
    if not np.allclose(darkness, expected, atol=1e-5):
        return "values differ from median minus minimum of each image"
    return None


def _confusion() -> dict[str, object]:
    cm = np.array([[50, 1, 0, 2], [2, 45, 1, 0], [0, 0, 40, 9], [3, 0, 4, 43]])
    return {"cm": cm, "classes": ["none", "scratch", "pit", "inclusion"]}


@course.exercise(
    "recall",
    "Recall of the class pit",
    answer="pit_recall",
    hint=(
        "Recall = correctly found pits / all true pits. Rows of the confusion matrix are the "
        "true classes; classes.index('pit') gives the row."
    ),
    solution="""
i = classes.index("pit")
pit_recall = cm[i, i] / cm[i, :].sum()
""",
    example=_confusion,
)
def _recall(pit_recall: float, cm: np.ndarray, classes: list[str]) -> str | None:
    i = classes.index("pit")
    precision = cm[i, i] / max(cm[:, i].sum(), 1)
    expected = cm[i, i] / max(cm[i, :].sum(), 1)
    if abs(float(pit_recall) - precision) < 1e-9 and abs(precision - expected) > 1e-9:
        return "that is the precision (a column); recall uses the row of the true class"
    return close(pit_recall, expected, rel=1e-6, what="recall")


@course.exercise(
    "expected_cost",
    "Expected cost per part",
    answer="cost_per_part",
    hint=(
        "Two kinds of mistakes, each weighted by how often the part type occurs: "
        "defect_rate x false_accept_rate x cost_false_accept plus "
        "(1 - defect_rate) x false_reject_rate x cost_false_reject."
    ),
    solution="""
cost_per_part = (
    defect_rate * false_accept_rate * cost_false_accept
    + (1 - defect_rate) * false_reject_rate * cost_false_reject
)
""",
    example=lambda: {
        "defect_rate": 0.05,
        "false_accept_rate": 0.1,
        "false_reject_rate": 0.02,
        "cost_false_accept": 50.0,
        "cost_false_reject": 2.0,
    },
)
def _expected_cost(
    cost_per_part: float,
    defect_rate: float,
    false_accept_rate: float,
    false_reject_rate: float,
    cost_false_accept: float,
    cost_false_reject: float,
) -> str | None:
    expected = (
        defect_rate * false_accept_rate * cost_false_accept
        + (1 - defect_rate) * false_reject_rate * cost_false_reject
    )
    unweighted = false_accept_rate * cost_false_accept + false_reject_rate * cost_false_reject
    if abs(float(cost_per_part) - unweighted) < 1e-9 and abs(unweighted - expected) > 1e-9:
        return "weight each mistake by how often that kind of part occurs (defect_rate)"
    return close(cost_per_part, expected, rel=1e-6, what="cost")
