"""Exercises of the predictive-maintenance course. Spoiler warning: the solutions are here."""

from __future__ import annotations

import numpy as np
import pandas as pd

from werkhub_widgets.coursekit import Course, close

course = Course("predictive-maintenance-course", namespace={"np": np, "pd": pd})
check, hint, solution, reference = course.check, course.hint, course.solution, course.reference


def _histories() -> dict[str, object]:
    lives = {0: 5, 1: 3, 2: 7}
    rows = [(unit, cycle) for unit, life in lives.items() for cycle in range(1, life + 1)]
    return {"histories": pd.DataFrame(rows, columns=["unit", "cycle"])}


@course.exercise(
    "rul",
    "Remaining useful life",
    answer="rul",
    hint=(
        "Each pump fails in its last recorded cycle, so RUL = last cycle of that pump - cycle. "
        'histories.groupby("unit")["cycle"].transform("max") gives the last cycle on every row.'
    ),
    solution='rul = histories.groupby("unit")["cycle"].transform("max") - histories["cycle"]',
    example=_histories,
)
def _rul(rul: object, histories: pd.DataFrame) -> str | None:
    values = np.asarray(rul, dtype=float)
    if values.shape != (len(histories),):
        return f"expected one value per row ({len(histories)}), got shape {values.shape}"
    expected = histories.groupby("unit")["cycle"].transform("max") - histories["cycle"]
    if np.allclose(values, expected + 1):
        return "off by one: in the last cycle (the failure) the remaining life is 0"
    if np.allclose(values, histories["cycle"].max() - histories["cycle"]):
        return "use the last cycle of each pump, not of the whole fleet"
    if not np.allclose(values, expected):
        return "some values are wrong: last cycle of the pump minus the current cycle"
    return None


def _baseline() -> dict[str, object]:
    rng = np.random.default_rng(5)
    cycle = rng.integers(1, 200, 50).astype(float)
    return {"mean_life": 120.0, "cycle": cycle, "true_rul": rng.integers(0, 150, 50).astype(float)}


@course.exercise(
    "baseline",
    "RMSE of the mean-life baseline",
    answer="baseline_rmse",
    hint=(
        "Prediction: np.clip(mean_life - cycle, 0, None) (an old pump cannot have negative "
        "life left). RMSE: square root of the mean of squared differences to true_rul."
    ),
    solution="""
prediction = np.clip(mean_life - cycle, 0, None)
baseline_rmse = np.sqrt(np.mean((prediction - true_rul) ** 2))
""",
    example=_baseline,
)
def _baseline_rmse(
    baseline_rmse: float, mean_life: float, cycle: np.ndarray, true_rul: np.ndarray
) -> str | None:
    prediction = np.clip(mean_life - cycle, 0, None)
    expected = float(np.sqrt(np.mean((prediction - true_rul) ** 2)))
    unclipped = float(np.sqrt(np.mean((mean_life - cycle - true_rul) ** 2)))
    if abs(float(baseline_rmse) - unclipped) < 1e-6 and abs(unclipped - expected) > 1e-6:
        return "clip the prediction at zero: a pump past the mean life still has >= 0 cycles left"
    mse = expected**2
    if abs(float(baseline_rmse) - mse) < 1e-6 * mse:
        return "that is the mean squared error; take its square root"
    return close(baseline_rmse, expected, rel=1e-6, what="RMSE")


_SPLIT_FEEDBACK = {
    "a": "splitting by pump is not about speed",
    "b": None,
    "c": "both splits use all the data; the question is which rows may end up in the test set",
}


@course.exercise(
    "split",
    "Why split by pump?",
    answer="answer",
    hint="Think about two rows of the same pump, one day apart: how different are they?",
    solution='answer = "b"',
    example=dict,
)
def _split(answer: str, **_: object) -> str | None:
    key = str(answer).strip().lower().strip("()")
    if key not in _SPLIT_FEEDBACK:
        return 'answer "a", "b" or "c"'
    return _SPLIT_FEEDBACK[key]


@course.exercise(
    "policy_cost",
    "Cost of a maintenance policy",
    answer="cost_per_1000_cycles",
    hint=(
        "Add up what all failures and all planned stops cost, divide by the total number of "
        "cycles the pumps ran, and multiply by 1000."
    ),
    solution="""
total_cost = failures * cost_failure + planned_stops * cost_preventive
cost_per_1000_cycles = 1000 * total_cost / cycles_run
""",
    example=lambda: {
        "failures": 3,
        "planned_stops": 12,
        "cycles_run": 1800,
        "cost_failure": 20000.0,
        "cost_preventive": 3000.0,
    },
)
def _policy_cost(
    cost_per_1000_cycles: float,
    failures: int,
    planned_stops: int,
    cycles_run: float,
    cost_failure: float,
    cost_preventive: float,
) -> str | None:
    total = failures * cost_failure + planned_stops * cost_preventive
    expected = 1000 * total / cycles_run
    if abs(float(cost_per_1000_cycles) - total) < 1e-6:
        return "that is the total cost; express it per 1000 operating cycles"
    return close(cost_per_1000_cycles, expected, rel=1e-6, what="cost")
