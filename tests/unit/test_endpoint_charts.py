"""Pure pieces of the model endpoints page and widget: per-minute windows, SVG charts,
names (no hub)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from werkhub.service.pages.endpoint_views import minute_window
from werkhub.service.pages.svg import minute_chart
from werkhub_widgets import minute_plot
from werkhub_widgets.endpoints import endpoint_name
from werkhub_widgets.model_registry import own_name

NOW = datetime(2025, 3, 4, 10, 30, 20, tzinfo=UTC).timestamp()
FOUND = [
    {"minute": "2025-03-04T10:28:00Z", "requests": 4, "errors": 1, "p50_ms": 12.5, "p99_ms": 40.0},
    {"minute": "2025-03-04T10:30:00Z", "requests": 2, "errors": 0, "p50_ms": 9.0, "p99_ms": 11.0},
    {"minute": "2025-03-04T08:00:00Z", "requests": 9, "errors": 0, "p50_ms": 1.0, "p99_ms": 1.0},
]


def test_window_ends_with_the_running_minute_and_fills_gaps() -> None:
    win = minute_window(FOUND, NOW, ZoneInfo("Europe/Berlin"))
    assert len(win.labels) == 60 and win.labels[-1] == "11:30" and win.labels[0] == "10:31"
    assert win.requests[-3:] == [4, 0, 2] and win.errors[-3:] == [1, 0, 0]
    assert win.p50[-3:] == [12.5, None, 9.0] and win.p99[-1] == 11.0
    assert win.total == 6 and win.failed == 1  # the minute outside the window is not counted
    widget = minute_plot.window(FOUND, NOW)
    assert widget["requests"] == win.requests and widget["p99"] == win.p99


def test_minute_chart_bars_lines_and_gaps() -> None:
    win = minute_window(FOUND, NOW, ZoneInfo("UTC"))
    bars = minute_chart(
        win.labels, {"requests": win.requests, "errors": win.errors}, "R", "req", bars=True
    )
    assert bars.startswith("<svg") and bars.endswith("</svg>")
    assert bars.count("<rect") == 2 + 3  # two legend swatches, three non-zero bars
    assert "10:28 requests: 4 req" in bars and "10:28 errors: 1 req" in bars
    lines = minute_chart(win.labels, {"p50": win.p50, "p99": win.p99}, "L", "ms")
    assert lines.count("<circle") == 4 and "<polyline" not in lines  # a gap between the two
    empty = minute_chart(win.labels, {"requests": [0] * 60}, "<b>", "req", bars=True)
    assert "No requests in this period." in empty and "&lt;b&gt;" in empty
    assert re.search(r">10</text>", minute_chart(["a"], {"x": [7]}, "t", "u", bars=True))
    html = minute_plot.plots(FOUND, NOW)
    assert "data-requests='6'" in html and html.count("<svg") == 2


@pytest.mark.parametrize(
    ("model", "name"),
    [("ann~Press Quality", "press-quality"), ("classifier", "classifier"),
     ("ann~3d-scan", "d-scan"), ("ann~___", "model"), ("x~" + "a" * 60, "a" * 40)],
)  # fmt: skip
def test_endpoint_names_from_model_names(model: str, name: str) -> None:
    assert endpoint_name(model) == name


def test_own_name_space() -> None:
    assert own_name(" press ", "ann") == "ann~press"
    assert own_name("team~press", "ann") == "team~press"
    for bad in ("", "a/b", "a:b"):
        with pytest.raises(ValueError):
            own_name(bad, "ann")
