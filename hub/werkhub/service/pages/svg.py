"""Small server-rendered SVG graphics: template thumbnails, grouped bar charts and charts
per minute (model endpoints).

Pure: standard library only. Every text is XML-escaped; no external fonts or images.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

FONT = "font-family='system-ui,sans-serif'"
#: colour pairs per audience / series, readable on white and for common colour blindness
PALETTE = ("#1f5f99", "#e08a1e", "#3b8f5a", "#8a4fa3", "#b03a48")
GPU_LABEL = {"none": "CPU only", "optional": "GPU optional", "required": "GPU required"}


def _hue(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:4], 16) % 360


def _wrap(text: str, width: int, lines: int) -> list[str]:
    out: list[str] = []
    for word in text.split():
        if out and len(out[-1]) + 1 + len(word) <= width:
            out[-1] += " " + word
        else:
            out.append(word)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: width - 1].rstrip() + "\u2026"
    return out


def thumbnail(
    slug: str, title: str, audience: str, gpu: str, runtime_minutes: float, tags: Sequence[str]
) -> str:
    """A 320x180 card image generated from a template's metadata."""
    hue = _hue(slug)
    title_lines = _wrap(title, 26, 3)
    text = "".join(
        f"<text x='16' y='{56 + 24 * i}' font-size='19' font-weight='600' fill='#fff' {FONT}>"
        f"{escape(line)}</text>"
        for i, line in enumerate(title_lines)
    )
    badge = "Course" if audience == "student" else "Engineer"
    tag_text = escape(" \u00b7 ".join(tags[:3]))
    return (
        "<svg xmlns='http://www.w3.org/2000/svg' width='320' height='180' "
        f"viewBox='0 0 320 180' role='img' aria-label='{escape(title, {chr(39): '&apos;'})}'>"
        f"<defs><linearGradient id='g' x1='0' y1='0' x2='1' y2='1'>"
        f"<stop offset='0' stop-color='hsl({hue},55%,32%)'/>"
        f"<stop offset='1' stop-color='hsl({(hue + 40) % 360},60%,45%)'/></linearGradient></defs>"
        "<rect width='320' height='180' rx='10' fill='url(#g)'/>"
        f"<rect x='16' y='14' width='{len(badge) * 9 + 16}' height='22' rx='11' "
        "fill='rgba(255,255,255,0.9)'/>"
        f"<text x='24' y='30' font-size='13' fill='hsl({hue},55%,25%)' {FONT}>{badge}</text>"
        f"{text}"
        f"<text x='16' y='150' font-size='13' fill='#fff' {FONT}>"
        f"{escape(GPU_LABEL.get(gpu, gpu))} \u00b7 {runtime_text(runtime_minutes)}</text>"
        f"<text x='16' y='168' font-size='11' fill='rgba(255,255,255,0.85)' {FONT}>"
        f"{tag_text}</text></svg>"
    )


def bar_chart(
    rows: Mapping[str, Mapping[str, float]],
    series: Sequence[str],
    title: str,
    unit: str = "GPU-hours",
) -> str:
    """Horizontal grouped bars: one group per row label, one bar per series."""
    labels = list(rows)
    bar_h, gap, left, width = 14, 10, 140, 640
    group_h = bar_h * len(series) + gap
    height = 60 + max(1, len(labels)) * group_h + 30
    peak = max([rows[r].get(s, 0.0) for r in labels for s in series] + [0.0]) or 1.0
    scale = (width - left - 80) / peak
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='100%' viewBox='0 0 {width} {height}' "
        f"role='img' aria-label='{escape(title)}'>",
        f"<title>{escape(title)}</title>",
        f"<text x='0' y='18' font-size='15' font-weight='600' {FONT}>{escape(title)}</text>",
    ]
    for i, name in enumerate(series):
        x = left + i * 130
        parts.append(
            f"<rect x='{x}' y='30' width='12' height='12' fill='{PALETTE[i % len(PALETTE)]}'/>"
            f"<text x='{x + 18}' y='41' font-size='12' {FONT}>{escape(name)}</text>"
        )
    if not labels:
        parts.append(f"<text x='0' y='80' font-size='13' {FONT}>No usage in this period.</text>")
    for g, label in enumerate(labels):
        y0 = 56 + g * group_h
        parts.append(
            f"<text x='{left - 8}' y='{y0 + group_h / 2}' font-size='12' text-anchor='end' "
            f"{FONT}>{escape(label)}</text>"
        )
        for i, name in enumerate(series):
            value = float(rows[label].get(name, 0.0))
            y = y0 + i * bar_h
            w = max(0.0, value * scale)
            parts.append(
                f"<rect x='{left}' y='{y}' width='{w:.1f}' height='{bar_h - 2}' "
                f"fill='{PALETTE[i % len(PALETTE)]}'><title>{escape(label)} {escape(name)}: "
                f"{value:g} {escape(unit)}</title></rect>"
                f"<text x='{left + w + 4:.1f}' y='{y + bar_h - 3}' font-size='11' {FONT}>"
                f"{value:g}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def heat_colour(free: int, total: int) -> str:
    """Background of an availability cell: green (all free) to red (none free)."""
    if total <= 0:
        return "#ddd"
    share = max(0.0, min(1.0, free / total))
    hue = round(120 * share)
    return f"hsl({hue},65%,{78 if share else 72}%)"


def runtime_text(minutes: float) -> str:
    """Expected runtime as people say it: "about 12 s", "about 3 min"."""
    if minutes < 1:
        return f"about {max(1, round(minutes * 60 / 5) * 5)} s"
    return f"about {minutes:.0f} min" if minutes >= 10 else f"about {round(minutes * 2) / 2:g} min"


def _nice(peak: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``peak`` (1 for 0)."""
    if peak <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(peak))
    return next(power * f for f in (1, 2, 5, 10) if power * f >= peak)


def minute_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str,
    unit: str,
    bars: bool = False,
) -> str:
    """A chart over consecutive minutes (``labels``, oldest first): every series as bars
    drawn over each other (``bars``: the later, smaller ones on top, e.g. errors over
    requests) or as lines with a gap where a value is None (no requests that minute)."""
    width, height, left, right, top, bottom = 640, 210, 52, 12, 44, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(labels))
    step = plot_w / n
    values = [v for vs in series.values() for v in vs if v is not None]
    peak = _nice(max([*values, 0.0]))

    def x(i: int) -> float:
        return left + (i + 0.5) * step

    def y(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='100%' viewBox='0 0 {width} {height}' "
        f"role='img' aria-label='{escape(title)}'>",
        f"<title>{escape(title)}</title>",
        f"<text x='0' y='16' font-size='14' font-weight='600' {FONT}>{escape(title)}</text>",
    ]
    for i, name in enumerate(series):
        lx = left + i * 120
        parts.append(
            f"<rect x='{lx}' y='24' width='12' height='12' fill='{PALETTE[i % len(PALETTE)]}'/>"
            f"<text x='{lx + 18}' y='35' font-size='12' {FONT}>{escape(name)}</text>"
        )
    for share in (0.0, 0.5, 1.0):
        gy = y(peak * share)
        parts.append(
            f"<line x1='{left}' y1='{gy:.1f}' x2='{width - right}' y2='{gy:.1f}' "
            f"stroke='{'#888' if share == 0 else '#e1e4e8'}'/>"
            f"<text x='{left - 6}' y='{gy + 4:.1f}' font-size='11' text-anchor='end' {FONT}>"
            f"{peak * share:g}</text>"
        )
    for i, label in enumerate(labels):
        if i % 10 == 0 or i == len(labels) - 1:
            parts.append(
                f"<text x='{x(i):.1f}' y='{height - 6}' font-size='11' text-anchor='middle' "
                f"{FONT}>{escape(label)}</text>"
            )
    for s, (name, vs) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        if bars:
            for i, v in enumerate(vs):
                if v:
                    parts.append(
                        f"<rect x='{left + i * step + 1:.1f}' y='{y(v):.1f}' "
                        f"width='{max(1.0, step - 2):.1f}' height='{plot_h - (y(v) - top):.1f}' "
                        f"fill='{colour}'><title>{escape(labels[i])} {escape(name)}: "
                        f"{v:g} {escape(unit)}</title></rect>"
                    )
            continue
        run: list[str] = []
        for i, v in enumerate([*vs, None]):
            if v is not None:
                run.append(f"{x(i):.1f},{y(v):.1f}")
                parts.append(
                    f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='2.5' fill='{colour}'>"
                    f"<title>{escape(labels[i])} {escape(name)}: {v:g} {escape(unit)}</title>"
                    "</circle>"
                )
            elif run:
                if len(run) > 1:
                    parts.append(
                        f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                        f"points='{' '.join(run)}'/>"
                    )
                run = []
    if not values or not any(values):
        parts.append(
            f"<text x='{left + plot_w / 2:.1f}' y='{top + plot_h / 2:.1f}' font-size='13' "
            f"text-anchor='middle' fill='#57606a' {FONT}>No requests in this period.</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
