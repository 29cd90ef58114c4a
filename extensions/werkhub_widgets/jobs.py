"""``jobs()``: schedule the current notebook as a job, run it now, see its history.

The parameter form comes from the notebook's ``parameters`` cell (``POST /api/jobs/inspect``);
values are type-checked here before anything is sent. Schedules: presets or a free cron
expression with the next five run times (``GET /api/cron/preview``).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import ipywidgets as w

from werkhub_widgets._ui import CSS, Panel, button, esc, parse_time, short_time, table
from werkhub_widgets.client import WerkhubClient

PRESETS = [
    ("Run once, now", "now"),
    ("Every weekday at 06:00", "0 6 * * 1-5"),
    ("Every hour", "0 * * * *"),
    ("Every day at 06:00", "0 6 * * *"),
    ("Every Monday at 07:00", "0 7 * * 1"),
    ("Custom cron expression", "custom"),
]
PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "str": (str,),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def check_value(name: str, kind: str, value: Any) -> Any:
    """The value to send for parameter ``name`` of type ``kind``, or ValueError."""
    if kind == "none":
        return value
    ok = isinstance(value, PY_TYPES.get(kind, (object,)))
    if isinstance(value, bool) and kind in ("int", "float"):
        ok = False
    if not ok:
        raise ValueError(
            f"parameters.{name}: expected {kind}, got {type(value).__name__} {value!r}"
        )
    return float(value) if kind == "float" else value


def current_notebook(home: Path) -> str:
    """The running notebook's path relative to ``home`` (Jupyter sets JPY_SESSION_NAME)."""
    session = os.environ.get("JPY_SESSION_NAME", "")
    if not session.endswith(".ipynb"):
        return ""
    path = Path(session)
    if path.is_absolute():
        try:
            return path.relative_to(home).as_posix()
        except ValueError:
            return ""
    return path.as_posix()


class JobsWidget(Panel):
    def __init__(
        self,
        notebook_path: str | None = None,
        client: WerkhubClient | None = None,
        home: str | Path | None = None,
    ) -> None:
        super().__init__(client)
        self.home = Path(home or os.environ.get("HOME") or Path.cwd())
        rel = notebook_path or current_notebook(self.home)
        self.declared: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, Any] = {}
        self.jobs: list[dict[str, Any]] = []
        self.runs: dict[int, list[dict[str, Any]]] = {}
        self.next_runs: list[str] = []
        self.notebook = w.Text(value=rel, description="Notebook", placeholder="path in your home")
        self.name = w.Text(value=Path(rel).stem if rel else "", description="Job name")
        self.preset = w.Dropdown(options=PRESETS, value="0 6 * * 1-5", description="When")
        self.cron = w.Text(value="0 6 * * 1-5", description="Cron", disabled=True)
        self.tz = w.Text(value="Europe/Berlin", description="Time zone")
        self.preview_html = w.HTML()
        self.params_box = w.VBox()
        self.history = w.HTML()
        self.preset.observe(lambda _c: self._preset_changed(), names="value")
        self.cron.observe(lambda _c: self.preview(), names="value")
        self.root.children = [
            w.HTML(f"{CSS}<h3>Schedule this notebook</h3>"),
            self.message,
            w.HBox([self.notebook, button("Load parameters", self.inspect)]),
            self.name,
            w.HTML("<b>Parameters</b> (from the cell tagged <code>parameters</code>)"),
            self.params_box,
            w.HBox([self.preset, self.cron, self.tz], layout=w.Layout(flex_flow="row wrap")),
            self.preview_html,
            w.HBox(
                [
                    button("Schedule", self.schedule, "Save the job", button_style="primary"),
                    button("Run now", self.run_now, "Run the notebook once, now"),
                    button("Refresh history", self.refresh),
                ]
            ),
            self.history,
        ]
        if self.client is not None:
            self.refresh()
            self.preview()
            if rel:  # last, so a problem with the notebook stays on show
                self.inspect()

    # ---- parameters ------------------------------------------------------------------
    def inspect(self) -> None:
        answer = self.act(
            lambda: self.api("POST", "api/jobs/inspect", json={"notebook": self.notebook.value})
        )
        if answer is None:
            return
        self.declared = {p["name"]: p for p in answer["parameters"]}
        self.inputs = {p["name"]: self._input(p) for p in answer["parameters"]}
        self.params_box.children = list(self.inputs.values()) or [
            w.HTML("<i>This notebook has no parameters cell: it runs as it is.</i>")
        ]
        if not self.name.value:
            self.name.value = Path(self.notebook.value).stem

    @staticmethod
    def _input(p: dict[str, Any]) -> Any:
        kind, default, label = p["type"], p["default"], f"{p['name']} ({p['type']})"
        style = {"description_width": "initial"}
        if kind == "bool":
            return w.Checkbox(value=bool(default), description=label, style=style)
        if kind == "int":
            return w.IntText(value=int(default), description=label, style=style)
        if kind == "float":
            return w.FloatText(value=float(default), description=label, style=style)
        if kind == "str":
            return w.Text(value=str(default), description=label, style=style)
        return w.Text(value=repr(default), description=label, style=style)

    def parameters(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Values of the form (or ``overrides``), checked against the declared types."""
        values: dict[str, Any] = {}
        for name, p in self.declared.items():
            control = self.inputs[name]
            value = control.value
            if p["type"] in ("list", "dict", "none"):
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise ValueError(
                        f"parameters.{name}: '{value}' is not a Python {p['type']} literal"
                    ) from None
            values[name] = value
        for name, value in (overrides or {}).items():
            if name not in self.declared:
                known = ", ".join(sorted(self.declared)) or "none"
                raise ValueError(f"parameters.{name}: not a parameter of this notebook ({known})")
            values[name] = value
        return {n: check_value(n, self.declared[n]["type"], v) for n, v in values.items()}

    # ---- schedule --------------------------------------------------------------------
    def _preset_changed(self) -> None:
        value = self.preset.value
        self.cron.disabled = value != "custom"
        if value not in ("custom", "now"):
            self.cron.value = value
        self.preview()

    def preview(self) -> list[str]:
        if self.preset.value == "now":
            self.next_runs = []
            self.preview_html.value = "Runs once, as soon as you press Schedule or Run now."
            return []
        answer = self.act(
            lambda: self.api(
                "GET", "api/cron/preview", params={"cron": self.cron.value, "tz": self.tz.value}
            )
        )
        if answer is None:
            self.next_runs = []
            self.preview_html.value = ""
            return []
        self.clear()
        self.next_runs = answer["next"]
        zone = ZoneInfo(self.tz.value)  # the service accepted it
        items = "".join(
            f"<li>{esc(short_time(parse_time(t).astimezone(zone)))} ({esc(zone.key)})</li>"
            for t in self.next_runs
        )
        self.preview_html.value = f"Next runs:<ol class='werkhub-next'>{items}</ol>"
        return self.next_runs

    def spec(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.name.value.strip():
            raise ValueError("name: give the job a name")
        if self.preset.value == "now":
            schedule: dict[str, Any] = {"kind": "now"}
        else:
            schedule = {"kind": "cron", "cron": self.cron.value, "tz": self.tz.value}
        return {
            "name": self.name.value.strip(),
            "notebook": self.notebook.value,
            "parameters": self.parameters(overrides),
            "schedule": schedule,
        }

    def schedule(self, parameters: dict[str, Any] | None = None) -> dict[str, Any] | None:
        job = self.act(lambda: self.api("POST", "api/jobs", json=self.spec(parameters)))
        if job is not None:
            when = ", ".join(short_time(t) for t in job.get("next_runs", [])[:2])
            self.refresh()
            self.say(f"Job '{job['name']}' saved" + (f"; next runs {when}." if when else "."))
        return job

    def _job_named(self, name: str) -> dict[str, Any] | None:
        return next((j for j in self.jobs if j["name"] == name), None)

    def run_now(self, parameters: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Run the existing job of this name now, or create a run-once job."""
        self.refresh()
        job = self._job_named(self.name.value.strip())
        if job is None:
            self.preset.value = "now"
            created = self.schedule(parameters)
            return created
        run = self.act(lambda: self.api("POST", f"api/jobs/{job['id']}/run"))
        if run is not None:
            self.refresh()
            self.say(f"Run {run['id']} of '{job['name']}' is queued.")
        return run

    # ---- history ---------------------------------------------------------------------
    def refresh(self) -> None:
        def load() -> None:
            self.jobs = self.api("GET", "api/jobs")
            self.runs = {j["id"]: self.api("GET", f"api/jobs/{j['id']}/runs") for j in self.jobs}

        if self.act(load) is None and self.error:
            return
        rows = []
        for job in self.jobs:
            for run in self.runs.get(job["id"], [])[:10]:
                report = (
                    f"<a href='{esc(run['report_url'])}' target='_blank' rel='noopener'>report</a>"
                    if run.get("report_url")
                    else ""
                )
                rows.append(
                    [
                        esc(job["name"]),
                        f"<span class='wh-tag'>{esc(run['status'])}</span>",
                        esc(short_time(run.get("started") or run.get("scheduled_for"))),
                        esc(f"{run['duration_s']:.1f} s" if run.get("duration_s") else ""),
                        report,
                        esc((run.get("error") or "")[:120]),
                    ]
                )
        jobs_text = ", ".join(
            f"{esc(j['name'])} ({'paused' if j.get('paused') else 'active'})" for j in self.jobs
        )
        self.history.value = f"<div><b>My jobs:</b> {jobs_text or 'none yet'}</div>" + (
            table(["Job", "Status", "Started", "Took", "Report", "Error"], rows) if rows else ""
        )


def jobs(notebook_path: str | None = None, client: WerkhubClient | None = None, **kw: Any):
    """Schedule a notebook: ``from werkhub_widgets import jobs; jobs()``."""
    return JobsWidget(notebook_path, client, **kw)
