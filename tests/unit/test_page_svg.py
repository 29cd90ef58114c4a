"""Pure page helpers: runtimes read the way people say them."""

from __future__ import annotations

import pytest

from werkhub.service.pages.svg import runtime_text


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(0.01, "about 1 s"), (0.2, "about 10 s"), (0.5, "about 30 s"), (1, "about 1 min"),
     (2.5, "about 2.5 min"), (12.4, "about 12 min")],
)  # fmt: skip
def test_runtime_text(minutes: float, text: str) -> None:
    assert runtime_text(minutes) == text
