"""The exercise checks of the courses: right answers pass, wrong ones get useful feedback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import COURSE_SLUGS, load_checks

EXERCISES = [(slug, key) for slug in COURSE_SLUGS for key in load_checks(slug).course.exercises]


def _wrong(answer: Any) -> Any:
    """A plausible but wrong answer of the same kind."""
    if isinstance(answer, bool | np.bool_):
        return not answer
    if isinstance(answer, str):
        return "c" if answer != "c" else "a"
    if isinstance(answer, pd.Series | np.ndarray):
        return np.asarray(answer, dtype=float) * 1.5 + 1
    return float(answer) * 1.5 + 1


@pytest.mark.parametrize(("slug", "key"), EXERCISES)
def test_reference_solution_passes(slug: str, key: str) -> None:
    course = load_checks(slug).course
    context = course.exercises[key].example()
    answer = course.reference(key, **context)
    assert course.feedback(key, answer, **context) == ("passed", "correct!")


@pytest.mark.parametrize(("slug", "key"), EXERCISES)
def test_wrong_and_missing_answers(slug: str, key: str) -> None:
    course = load_checks(slug).course
    context = course.exercises[key].example()
    answer = course.reference(key, **context)
    status, message = course.feedback(key, _wrong(answer), **context)
    assert status == "failed" and message
    if np.ndim(answer) == 0 and not isinstance(answer, bool | str | np.bool_):
        assert f"{float(answer):.4g}" not in message, "feedback must not give the answer away"
    assert course.feedback(key, ..., **context)[0] == "not attempted"
    assert course.feedback(key, None, **context)[0] == "not attempted"


def test_check_prints_feedback_and_keeps_score(capsys: pytest.CaptureFixture[str]) -> None:
    checks = load_checks("heat-treatment-twin-course")
    course = checks.course
    checks.check("diffusivity", ..., k=40.0, rho=7850.0, cp=490.0)
    checks.check("diffusivity", 1.0, k=40.0, rho=7850.0, cp=490.0)
    assert course.status["diffusivity"] == "failed"
    checks.check("diffusivity", 40.0 / (7850.0 * 490.0), k=40.0, rho=7850.0, cp=490.0)
    out = capsys.readouterr().out
    assert "⏳" in out and "❌" in out and "✅" in out and 'hint("diffusivity")' in out
    assert course.summary()["passed"] == 1
    checks.hint("diffusivity")
    shown = checks.solution("diffusivity")
    out = capsys.readouterr().out
    assert "💡" in out and shown in out and "alpha =" in shown


@pytest.mark.parametrize(
    ("slug", "key", "mistake", "expected"),
    [
        ("heat-treatment-twin-course", "biot", lambda a: 2 * a, "half the thickness"),
        ("heat-treatment-twin-course", "time_step", lambda a: 2 * a, "1D limit"),
        ("heat-treatment-twin-course", "lumped_time", lambda a: 1000 * a, "units"),
        ("heat-treatment-twin-course", "explicit_step", lambda a: a[::-1] * 0, "end values"),
        ("predictive-maintenance-course", "rul", lambda a: a + 1, "off by one"),
        ("predictive-maintenance-course", "baseline", lambda a: a**2, "square root"),
        ("predictive-maintenance-course", "split", lambda a: "a", "not about speed"),
        ("predictive-maintenance-course", "split", lambda a: "maybe", 'answer "a", "b" or "c"'),
        ("quality-inspection-course", "dark_spot", lambda a: -a, "sign is reversed"),
        ("quality-inspection-course", "standardise", lambda a: a[:3], "keep the shape"),
        ("quality-inspection-course", "recall", lambda a: 40 / 45, "that is the precision"),
        ("quality-inspection-course", "expected_cost", lambda a: 5.04, "weight each mistake"),
    ],
)
def test_typical_mistakes_get_specific_feedback(slug, key, mistake, expected) -> None:
    course = load_checks(slug).course
    context = course.exercises[key].example()
    answer = course.reference(key, **context)
    status, message = course.feedback(key, mistake(answer), **context)
    assert status == "failed"
    assert expected in message


def test_a_crashing_check_is_feedback_not_an_error() -> None:
    course = load_checks("quality-inspection-course").course
    context = course.exercises["standardise"].example()
    status, message = course.feedback("standardise", "not an array", **context)
    assert status == "failed" and "raised" in message
