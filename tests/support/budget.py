"""Hypothesis example budgets per profile (registered and loaded in tests/conftest.py).

A test states the budget it runs with under ``make test`` (the ``default`` profile: fixed
seeds); under the ``deep`` profile (``make test-deep``: ``HYPOTHESIS_PROFILE=deep``, or
pytest's ``--hypothesis-profile deep``) it gets ``DEEP_FACTOR`` times as many examples, or the
number it names for deep runs, from fresh random seeds.
"""

from __future__ import annotations

import os

from hypothesis import settings

#: the profile HYPOTHESIS_PROFILE selects (tests/conftest.py loads it)
SELECTED = os.environ.get("HYPOTHESIS_PROFILE", "default")
DEEP_FACTOR = 10


def profile() -> str:
    """The Hypothesis profile loaded now."""
    current = getattr(settings, "get_current_profile_name", None)
    return current() if current is not None else SELECTED


def deep() -> bool:
    return profile() == "deep"


def examples(default: int, deep_examples: int | None = None) -> int:
    """Examples for a test whose ``make test`` budget is ``default``: that, or under the deep
    profile ``deep_examples`` (``DEEP_FACTOR`` times ``default`` unless given)."""
    if not deep():
        return default
    return deep_examples if deep_examples is not None else default * DEEP_FACTOR
