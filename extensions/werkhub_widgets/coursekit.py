"""Exercises with feedback for werkhub courses.

Each exercise has a checker that says what is wrong without giving the answer away, a hint,
and a solution that is only shown when asked for (``solution("key")``). A notebook runs to the
end whether or not an exercise is solved, so courses also work as unattended jobs.

A course's ``checks.py`` builds its exercises with ``from werkhub_widgets.coursekit import
Course, close``. Standard library only: this runs in every user's server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Checker = Callable[..., str | None]


@dataclass(frozen=True)
class Exercise:
    key: str
    title: str
    answer: str  # the variable the student assigns
    hint: str
    solution: str  # code that assigns ``answer`` from the context variables
    checker: Checker  # (answer, **context) -> None when right, else feedback
    example: Callable[[], dict[str, Any]]  # a context to try the solution on (tests use it)


class Course:
    """A set of exercises and what the student has achieved so far."""

    def __init__(self, name: str, namespace: dict[str, Any] | None = None) -> None:
        self.name = name
        self.namespace = dict(namespace or {})  # names the solutions may use, e.g. {"np": numpy}
        self.exercises: dict[str, Exercise] = {}
        self.status: dict[str, str] = {}

    def exercise(
        self,
        key: str,
        title: str,
        answer: str,
        hint: str,
        solution: str,
        example: Callable[[], dict[str, Any]],
    ) -> Callable[[Checker], Checker]:
        """Register the decorated function as the checker of exercise ``key``."""

        def register(checker: Checker) -> Checker:
            self.exercises[key] = Exercise(
                key, title, answer, hint, solution.strip(), checker, example
            )
            self.status[key] = "not attempted"
            return checker

        return register

    def feedback(self, key: str, answer: Any, **context: Any) -> tuple[str, str]:
        """``(status, message)`` for an answer; status is passed, failed or not attempted."""
        exercise = self.exercises[key]
        if answer is Ellipsis or answer is None:
            return (
                "not attempted",
                f"replace the `...` after `{exercise.answer} =` with your answer",
            )
        try:
            problem = exercise.checker(answer, **context)
        except Exception as exc:  # a wrong shape or type must not stop the notebook
            problem = f"checking your answer raised {type(exc).__name__}: {exc}"
        return ("passed", "correct!") if problem is None else ("failed", problem)

    def check(self, key: str, answer: Any, **context: Any) -> None:
        """Print feedback on ``answer`` (the status is kept in ``self.status``)."""
        status, message = self.feedback(key, answer, **context)
        self.status[key] = status
        title = self.exercises[key].title
        symbol = {"passed": "✅", "failed": "❌", "not attempted": "⏳"}[status]
        print(f"{symbol} {title}: {message}")
        if status != "passed":
            print(f'   Stuck? hint("{key}") gives a hint, solution("{key}") the answer.')

    def hint(self, key: str) -> None:
        print(f"💡 {self.exercises[key].hint}")

    def solution(self, key: str) -> str:
        """Print (and return) the reference solution of exercise ``key``."""
        exercise = self.exercises[key]
        print(f"Solution of '{exercise.title}':\n\n{exercise.solution}")
        return exercise.solution

    def reference(self, key: str, **context: Any) -> Any:
        """The reference answer for ``context``, without showing how it is computed."""
        exercise = self.exercises[key]
        namespace = {**self.namespace, **context}
        exec(exercise.solution, namespace)
        return namespace[exercise.answer]

    def summary(self) -> dict[str, int]:
        counts = {"passed": 0, "failed": 0, "not attempted": 0}
        for status in self.status.values():
            counts[status] += 1
        return counts


def close(value: float, expected: float, rel: float = 1e-3, what: str = "value") -> str | None:
    """Feedback if ``value`` is not within ``rel`` of ``expected`` (without revealing it)."""
    value = float(value)
    if abs(value - expected) <= rel * abs(expected):
        return None
    direction = "too large" if value > expected else "too small"
    factor = value / expected if expected else 0.0
    if abs(factor / 1000 - 1) < 0.01 or abs(factor * 1000 - 1) < 0.01:
        return f"the {what} is off by a factor of 1000: check your units (mm or m?)"
    return f"the {what} is {direction}"
