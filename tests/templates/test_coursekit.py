"""werkhub_widgets.coursekit: the exercise machinery that every course's checks.py uses."""

from __future__ import annotations

import pytest
from conftest import COURSE_SLUGS, TEMPLATES

from werkhub_widgets.coursekit import Course, Exercise, close


def _course() -> Course:
    course = Course("demo", namespace={"scale": 2.0})

    @course.exercise(
        "double",
        "Double it",
        answer="doubled",
        hint="Multiply by scale.",
        solution="\n    doubled = value * scale\n",
        example=lambda: {"value": 3.0},
    )
    def _double(doubled: float, value: float) -> str | None:
        return close(doubled, 2 * value, what="double")

    return course


def test_exercise_is_registered_with_a_stripped_solution() -> None:
    course = _course()
    exercise = course.exercises["double"]
    assert isinstance(exercise, Exercise)
    assert (exercise.title, exercise.answer, exercise.hint) == (
        "Double it",
        "doubled",
        "Multiply by scale.",
    )
    assert exercise.solution == "doubled = value * scale"
    assert exercise.example() == {"value": 3.0}
    assert course.status == {"double": "not attempted"}


def test_feedback_statuses() -> None:
    course = _course()
    assert course.feedback("double", 6.0, value=3.0) == ("passed", "correct!")
    assert course.feedback("double", 7.0, value=3.0) == ("failed", "the double is too large")
    for missing in (..., None):
        status, message = course.feedback("double", missing, value=3.0)
        assert status == "not attempted" and "`doubled =`" in message
    status, message = course.feedback("double", "six", value=3.0)  # the checker raises
    assert status == "failed" and "raised ValueError" in message
    assert course.status["double"] == "not attempted", "feedback() does not keep score"


def test_check_prints_and_keeps_score(capsys: pytest.CaptureFixture[str]) -> None:
    course = _course()
    course.check("double", 5.0, value=3.0)
    out = capsys.readouterr().out
    assert out.startswith("❌ Double it: the double is too small")
    assert 'hint("double")' in out and 'solution("double")' in out
    assert course.summary() == {"passed": 0, "failed": 1, "not attempted": 0}
    course.check("double", 6.0, value=3.0)
    out = capsys.readouterr().out
    assert out == "✅ Double it: correct!\n"
    assert course.summary() == {"passed": 1, "failed": 0, "not attempted": 0}


def test_hint_solution_and_reference(capsys: pytest.CaptureFixture[str]) -> None:
    course = _course()
    course.hint("double")
    assert capsys.readouterr().out == "💡 Multiply by scale.\n"
    shown = course.solution("double")
    assert shown == "doubled = value * scale" and shown in capsys.readouterr().out
    assert course.reference("double", value=4.0) == 8.0  # uses the course namespace
    assert capsys.readouterr().out == "", "reference() must not show the solution"


@pytest.mark.parametrize(
    ("value", "expected", "feedback"),
    [
        (1.0005, 1.0, None),
        (-2.0, -2.0, None),
        (1.1, 1.0, "the value is too large"),
        (0.9, 1.0, "the value is too small"),
        (1000.0, 1.0, "the value is off by a factor of 1000: check your units (mm or m?)"),
        (0.001, 1.0, "the value is off by a factor of 1000: check your units (mm or m?)"),
        (0.0, 0.0, None),
        (0.1, 0.0, "the value is too large"),
    ],
)
def test_close(value: float, expected: float, feedback: str | None) -> None:
    assert close(value, expected) == feedback


def test_close_names_the_quantity_and_takes_a_tolerance() -> None:
    assert close(1.05, 1.0, rel=0.1) is None
    assert close(2.0, 1.0, what="Biot number") == "the Biot number is too large"


def test_courses_use_the_shared_kit_and_keep_no_copy() -> None:
    """One coursekit, in werkhub_widgets: no course folder carries its own copy."""
    for slug in COURSE_SLUGS:
        folder = TEMPLATES / slug
        assert not (folder / "coursekit.py").exists(), slug
        source = (folder / "checks.py").read_text(encoding="utf-8")
        assert "from werkhub_widgets.coursekit import" in source, slug
    assert not (TEMPLATES / "coursekit.py").exists()
