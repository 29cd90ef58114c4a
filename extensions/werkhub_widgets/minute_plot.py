"""Figures per minute of a model endpoint as inline SVG (no plotting library, no CDN):
requests (errors on top) as bars and p50/p99 latency as lines, over the last hour."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from werkhub_widgets._ui import esc

COLOURS = ("#1f5f99", "#b03a48", "#3b8f5a", "#e08a1e")


def window(figures: list[dict[str, Any]], now: float, minutes: int = 60) -> dict[str, list[Any]]:
    """The metrics API's minutes (only those with requests) as a full window ending with
    the running minute: labels (local time), requests, errors, p50 and p99 (None: no
    requests that minute)."""
    end = int(now // 60)
    keys = range(end - minutes + 1, end + 1)
    by_minute = {
        int(datetime.fromisoformat(str(f["minute"])).timestamp() // 60): f for f in figures
    }
    rows = [by_minute.get(k) for k in keys]
    return {
        "labels": [datetime.fromtimestamp(k * 60).strftime("%H:%M") for k in keys],
        "requests": [int(r["requests"]) if r else 0 for r in rows],
        "errors": [int(r["errors"]) if r else 0 for r in rows],
        "p50": [float(r["p50_ms"]) if r and r["requests"] else None for r in rows],
        "p99": [float(r["p99_ms"]) if r and r["requests"] else None for r in rows],
    }


def _nice(peak: float) -> float:
    if peak <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(peak))
    return next(power * f for f in (1, 2, 5, 10) if power * f >= peak)


def chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str,
    unit: str,
    bars: bool = False,
) -> str:
    """One SVG chart over the minutes of ``labels``: bars drawn over each other, or lines
    with gaps where a value is None."""
    width, height, left, top, bottom = 560, 180, 48, 40, 22
    plot_w, plot_h = width - left - 10, height - top - bottom
    step = plot_w / max(1, len(labels))
    values = [v for vs in series.values() for v in vs if v is not None]
    peak = _nice(max([*values, 0.0]))

    def y(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{width}'"
        f" role='img' aria-label='{esc(title)}'><title>{esc(title)}</title>",
        f"<text x='0' y='14' font-size='13' font-weight='600'>{esc(title)}</text>",
    ]
    for i, name in enumerate(series):
        parts.append(
            f"<rect x='{left + i * 90}' y='22' width='10' height='10' fill='{COLOURS[i]}'/>"
            f"<text x='{left + i * 90 + 14}' y='31' font-size='11'>{esc(name)}</text>"
        )
    for share in (0.0, 0.5, 1.0):
        gy = y(peak * share)
        parts.append(
            f"<line x1='{left}' y1='{gy:.1f}' x2='{width - 10}' y2='{gy:.1f}' stroke='#ddd'/>"
            f"<text x='{left - 4}' y='{gy + 4:.1f}' font-size='10' text-anchor='end'>"
            f"{peak * share:g}</text>"
        )
    for i, label in enumerate(labels):
        if i % 15 == 0 or i == len(labels) - 1:
            parts.append(
                f"<text x='{left + (i + 0.5) * step:.1f}' y='{height - 6}' font-size='10' "
                f"text-anchor='middle'>{esc(label)}</text>"
            )
    for s, (name, vs) in enumerate(series.items()):
        colour = COLOURS[s % len(COLOURS)]
        points: list[list[str]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                points.append([])
                continue
            tip = f"<title>{esc(labels[i])} {esc(name)}: {v:g} {esc(unit)}</title>"
            if bars:
                if v:
                    parts.append(
                        f"<rect x='{left + i * step + 0.5:.1f}' y='{y(v):.1f}' "
                        f"width='{max(1.0, step - 1):.1f}' height='{top + plot_h - y(v):.1f}' "
                        f"fill='{colour}'>{tip}</rect>"
                    )
                continue
            cx = left + (i + 0.5) * step
            points[-1].append(f"{cx:.1f},{y(v):.1f}")
            parts.append(
                f"<circle cx='{cx:.1f}' cy='{y(v):.1f}' r='2' fill='{colour}'>{tip}</circle>"
            )
        parts += [
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{' '.join(p)}'/>"
            for p in points
            if len(p) > 1
        ]
    parts.append("</svg>")
    return "".join(parts)


def plots(figures: list[dict[str, Any]], now: float, minutes: int = 60) -> str:
    """Both charts of an endpoint's last ``minutes``, side by side when there is room."""
    win = window(figures, now, minutes)
    requests = chart(
        win["labels"],
        {"requests": win["requests"], "errors": win["errors"]},
        f"Requests per minute (last {minutes} min)",
        "requests",
        bars=True,
    )
    latency = chart(
        win["labels"],
        {"p50": win["p50"], "p99": win["p99"]},
        "Latency per minute (ms)",
        "ms",
    )
    total = sum(win["requests"])
    return (
        "<div style='display:flex;flex-wrap:wrap;gap:8px'>"
        f"<div class='werkhub-requests-plot' data-requests='{total}'>{requests}</div>"
        f"<div class='werkhub-latency-plot'>{latency}</div></div>"
    )
