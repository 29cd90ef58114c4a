"""``experiments()``: my MLflow runs as a table; pick runs and plot a metric against each other.

Reads through the werkhub MLflow gateway (only experiments the person may see), draws
the plot as SVG (no plotting library needed) and links to the MLflow UI.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import ipywidgets as w

from werkhub_widgets._ui import CSS, Panel, esc, table
from werkhub_widgets.client import ServiceError
from werkhub_widgets.tracking_client import TrackingClient

COLOURS = ("#1f5f99", "#e08a1e", "#3b8f5a", "#8a4fa3", "#b03a48", "#17becf", "#7f7f7f")


def line_chart(series: dict[str, list[tuple[float, float]]], metric: str) -> str:
    """An SVG chart of ``metric`` over steps, one line (and points) per run."""
    points = [p for values in series.values() for p in values]
    if not points:
        return "<i>No values of this metric in the chosen runs.</i>"
    width, height, left, bottom = 640, 300, 60, 40
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - 20)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - bottom - 20)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height + 20 * len(series)}'"
        f" width='{width}' role='img' aria-label='{esc(metric)} per step'>",
        f"<line x1='{left}' y1='{height - bottom}' x2='{width - 10}' y2='{height - bottom}' "
        "stroke='#888'/>",
        f"<line x1='{left}' y1='10' x2='{left}' y2='{height - bottom}' stroke='#888'/>",
        f"<text x='{left - 6}' y='{sy(y1) + 4:.1f}' font-size='11' text-anchor='end'>"
        f"{y1:.4g}</text>",
        f"<text x='{left - 6}' y='{sy(y0) + 4:.1f}' font-size='11' text-anchor='end'>"
        f"{y0:.4g}</text>",
        f"<text x='{left}' y='{height - bottom + 16}' font-size='11'>step {x0:g}</text>",
        f"<text x='{width - 10}' y='{height - bottom + 16}' font-size='11' text-anchor='end'>"
        f"step {x1:g}</text>",
        f"<text x='{(width + left) / 2}' y='{height - 6}' font-size='12' text-anchor='middle'>"
        f"{esc(metric)}</text>",
    ]
    for i, (label, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        values = sorted(values)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        if len(values) > 1:
            parts.append(
                f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{path}'/>"
            )
        parts += [
            f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{colour}'>"
            f"<title>{esc(label)}: {y:.6g} at step {x:g}</title></circle>"
            for x, y in values
        ]
        y = height + 14 + 20 * i
        parts.append(
            f"<rect x='{left}' y='{y - 10}' width='12' height='12' fill='{colour}'/>"
            f"<text x='{left + 18}' y='{y}' font-size='12'>{esc(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _when(ms: Any) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


class ExperimentsWidget(Panel):
    def __init__(self, tracking: TrackingClient | None = None, ui_url: str | None = None) -> None:
        # the werkhub service is not needed here: MLflow answers through its own gateway
        self.message = w.HTML()
        self.root = w.VBox()
        self.error = None
        self.text = ""
        try:
            self.tracking: TrackingClient | None = tracking or TrackingClient()
        except ServiceError as exc:
            self.tracking = None
            self.fail(exc.message)
        self.client = self.tracking  # type: ignore[assignment]  # Panel.act checks it
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        self.ui_url = ui_url or f"{base.rstrip('/')}/services/mlflow/"
        self.experiments: dict[str, str] = {}
        self.all_runs: list[dict[str, Any]] = []
        self.run_picker = w.SelectMultiple(description="Runs", rows=8, layout=w.Layout(width="95%"))
        self.metric = w.Dropdown(description="Metric", options=[])
        self.run_picker.observe(lambda _c: self._metrics_changed(), names="value")
        self.table = w.HTML()
        self.plot_area = w.HTML()
        plot = w.Button(description="Plot", button_style="primary", tooltip="Plot the metric")
        plot.on_click(lambda _b: self.plot())
        refresh = w.Button(description="Refresh")
        refresh.on_click(lambda _b: self.refresh())
        self.root.children = [
            w.HTML(
                f"{CSS}<h3>My experiments</h3><a href='{esc(self.ui_url)}' target='_blank' "
                "rel='noopener'>Open the MLflow UI</a>"
            ),
            self.message,
            self.table,
            self.run_picker,
            w.HBox([self.metric, plot, refresh]),
            self.plot_area,
        ]
        if self.tracking is not None:
            self.refresh()

    def refresh(self) -> None:
        def load() -> None:
            assert self.tracking is not None
            found = self.tracking.experiments()
            self.experiments = {e["experiment_id"]: e["name"] for e in found}
            self.all_runs = self.tracking.runs(list(self.experiments))

        self.act(load)
        self.render()

    def label(self, run: dict[str, Any]) -> str:
        info = run["info"]
        name = info.get("run_name") or info["run_id"][:8]
        exp = self.experiments.get(info["experiment_id"], info["experiment_id"])
        return f"{exp} / {name} ({info.get('status', '').lower()}, {_when(info.get('start_time'))})"

    def render(self) -> None:
        rows = []
        for run in self.all_runs[:100]:
            info, data = run["info"], run.get("data", {})
            metrics = ", ".join(
                f"{m['key']}={m['value']:.4g}" for m in (data.get("metrics") or [])[:6]
            )
            params = ", ".join(f"{p['key']}={p['value']}" for p in (data.get("params") or [])[:6])
            link = f"{self.ui_url}#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
            rows.append(
                [
                    esc(self.experiments.get(info["experiment_id"], "")),
                    f"<a href='{esc(link)}' target='_blank' rel='noopener'>"
                    f"{esc(info.get('run_name') or info['run_id'][:8])}</a>",
                    esc(info.get("status", "")),
                    esc(_when(info.get("start_time"))),
                    esc(metrics),
                    esc(params),
                ]
            )
        self.table.value = (
            table(["Experiment", "Run", "Status", "Started", "Metrics", "Parameters"], rows)
            if rows
            else "<i>No runs yet: runs appear here once a notebook logs to MLflow.</i>"
        )
        self.run_picker.options = [(self.label(r), r["info"]["run_id"]) for r in self.all_runs]

    def _metrics_changed(self) -> None:
        chosen = set(self.run_picker.value)
        keys = sorted(
            {
                m["key"]
                for r in self.all_runs
                if r["info"]["run_id"] in chosen
                for m in (r.get("data", {}).get("metrics") or [])
            }
        )
        self.metric.options = keys

    def select(self, run_ids: list[str], metric: str | None = None) -> None:
        self.run_picker.value = tuple(run_ids)
        if metric is not None:
            self.metric.value = metric

    def plot(self) -> dict[str, list[tuple[float, float]]] | None:
        runs = list(self.run_picker.value)
        if not runs or not self.metric.value:
            self.fail("Pick one or more runs and a metric to plot.")
            return None
        key = self.metric.value
        by_id = {r["info"]["run_id"]: r for r in self.all_runs}

        def load() -> dict[str, list[tuple[float, float]]]:
            assert self.tracking is not None
            series = {}
            for run_id in runs:
                values = self.tracking.history(run_id, key)
                label = by_id[run_id]["info"].get("run_name") or run_id[:8]
                series[label] = [(float(v.get("step", 0)), float(v["value"])) for v in values]
            return series

        series = self.act(load)
        if series is not None:
            self.clear()
            self.plot_area.value = line_chart(series, key)
        return series


def experiments(tracking: TrackingClient | None = None, **kwargs: Any) -> ExperimentsWidget:
    """Show my MLflow runs: ``from werkhub_widgets import experiments; experiments()``."""
    return ExperimentsWidget(tracking, **kwargs)
