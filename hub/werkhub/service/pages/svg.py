"""Small server-rendered SVG graphics: template thumbnails and grouped bar charts.

Pure: standard library only. Every text is XML-escaped; no external fonts or images.
"""

from __future__ import annotations

import hashlib
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
