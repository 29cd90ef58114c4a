"""``federation()``: federated training across organisations from a notebook.

Shows the federations your organisation owns or takes part in (or was invited to), the
parties of the one chosen and their state, and its runs; the owner (its creator, the owner
organisation's admins) starts a run and sees each round as it arrives (parties reporting,
loss, metrics: a table and a small chart, polled every few seconds), then the run's final
message and the registered global model. Everything goes through the werkhub service's API
(``/api/federations``) with the server's hub token.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any
from urllib.parse import quote

import ipywidgets as w

from werkhub_widgets._ui import CSS, Panel, button, esc, short_time, table
from werkhub_widgets.client import ServiceError, WerkhubClient
from werkhub_widgets.minute_plot import chart

ENDED = ("finished", "failed", "stopped")
STATE_TAG = {
    "accepted": "#dff3e4",
    "finished": "#dff3e4",
    "invited": "#fff8e1",
    "running": "#e6eef6",
    "starting": "#e6eef6",
    "failed": "#fbe3e4",
}
#: the metrics the chart shows besides the loss (the table shows all)
CHART_METRICS = 3


def tag(state: str) -> str:
    colour = STATE_TAG.get(state, "#eee")
    return (
        f"<span class='wh-tag werkhub-state' data-state='{esc(state)}' "
        f"style='background:{colour}'>{esc(state)}</span>"
    )


def figure(value: Any) -> str:
    """A loss or metric as people read it: four significant digits, '-' for none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"


def traffic(found: Any) -> str:
    """A party's bytes through its relay: '1.5 kB / 2.4 MB' ('' before any)."""
    if not isinstance(found, dict):
        return ""
    return f"{size(found.get('sent'))} / {size(found.get('received'))}"


def size(count: Any) -> str:
    if isinstance(count, bool) or not isinstance(count, int | float) or count < 0:
        return "-"
    value = float(count)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def metric_names(rounds: list[dict[str, Any]]) -> list[str]:
    return sorted({str(k) for r in rounds for k in (r.get("metrics") or {})})


def rounds_html(rounds: list[dict[str, Any]]) -> str:
    """The rounds so far: a table (round, parties reporting, loss, every metric) and a
    chart of the loss and the first metrics; a line saying so while there is none."""
    if not rounds:
        return "<i class='werkhub-fed-norounds'>No round finished yet.</i>"
    names = metric_names(rounds)
    rows = [
        [
            esc(r.get("round", "")),
            esc(r.get("parties", "")),
            figure(r.get("loss")),
            *(figure((r.get("metrics") or {}).get(n)) for n in names),
        ]
        for r in rounds
    ]
    series: dict[str, list[float | None]] = {"loss": [_number(r.get("loss")) for r in rounds]}
    for name in names[:CHART_METRICS]:
        series[name] = [_number((r.get("metrics") or {}).get(name)) for r in rounds]
    labels = [str(r.get("round", i + 1)) for i, r in enumerate(rounds)]
    plot = chart(labels, series, "Global model per round", "")
    return (
        f"<div class='werkhub-fed-rounds' data-rounds='{len(rounds)}'>"
        f"{table(['Round', 'Parties', 'Loss', *names], rows)}</div>"
        f"<div class='werkhub-fed-chart'>{plot}</div>"
    )


def run_html(run: dict[str, Any], mlflow_ui: str) -> str:
    """One run: status, message, rounds, MLflow run and registered model."""
    status = str(run.get("status", ""))
    message = str(run.get("message") or "")
    parts = [
        f"<div class='werkhub-fed-run' data-status='{esc(status)}'><b>Run {esc(run.get('id'))}"
        f"</b> {tag(status)} {len(run.get('rounds') or [])} of "
        f"{esc(run.get('planned_rounds', '?'))} rounds, started "
        f"{esc(short_time(run.get('started')))}"
        + (f" by {esc(run['started_by'])}" if run.get("started_by") else "")
        + (f", ended {esc(short_time(run.get('ended')))}" if run.get("ended") else "")
        + "</div>"
    ]
    if message:
        cls = "wh-error" if status == "failed" else "wh-card"
        parts.append(f"<div class='{cls} werkhub-fed-message'>{esc(message)}</div>")
    parts.append(rounds_html([r for r in run.get("rounds") or [] if isinstance(r, dict)]))
    for key, what in (("mlflow", "Global metrics"), ("party_mlflow", "Your organisation's")):
        found = run.get(key) or {}
        if found.get("experiment_id") and found.get("run_id"):
            link = (
                f"{mlflow_ui}#/experiments/{quote(str(found['experiment_id']))}"
                f"/runs/{quote(str(found['run_id']))}"
            )
            parts.append(
                f"<div class='werkhub-fed-{key}'>{what} in MLflow: <a href='{esc(link)}' "
                "target='_blank' rel='noopener'>the run</a></div>"
            )
    model = run.get("model") or {}
    if model.get("name"):
        link = f"{mlflow_ui}#/models/{quote(str(model['name']), safe='')}"
        parts.append(
            f"<div class='werkhub-fed-model'>Registered model: <a href='{esc(link)}' "
            f"target='_blank' rel='noopener'><code>{esc(model['name'])}</code></a> version "
            f"{esc(model.get('version'))} (shared with every party's organisation)</div>"
        )
    return "".join(parts)


class FederationWidget(Panel):
    def __init__(
        self,
        client: WerkhubClient | None = None,
        name_or_id: str | int | None = None,
        poll_seconds: float = 3,
        poll_minutes: float = 240,
        mlflow_ui: str | None = None,
    ) -> None:
        super().__init__(client)
        self.poll_seconds = poll_seconds
        self.poll_minutes = poll_minutes
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        self.mlflow_ui = mlflow_ui or f"{base.rstrip('/')}/services/mlflow/"
        self.federations: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.run: dict[str, Any] | None = None
        self._me: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._stop: threading.Event | None = None
        self.root.add_class("werkhub-federation")
        self.listing = w.HTML()
        self.listing.add_class("werkhub-fed-list")
        self.picker = w.Dropdown(description="Federation", options=[])
        self.picker.add_class("werkhub-fed-picker")
        self.picker.observe(lambda _c: self.show_selected(), names="value")
        self.detail = w.HTML()
        self.detail.add_class("werkhub-fed-detail")
        self.rounds = w.BoundedIntText(
            value=1, min=1, max=500, description="Rounds", layout=w.Layout(width="170px")
        )
        self.start_button = button(
            "Start a run", self.start, "Start a federated run now", button_style="primary"
        )
        self.start_button.add_class("werkhub-fed-start")
        self.stop_button = button("Stop the run", self.stop_run, button_style="danger")
        self.owner_box = w.HBox(
            [self.rounds, self.start_button, self.stop_button], layout=w.Layout(display="none")
        )
        self.run_picker = w.Dropdown(description="Run", options=[])
        self.run_picker.observe(lambda _c: self.show_run(), names="value")
        self.run_view = w.HTML()
        self.run_view.add_class("werkhub-fed-run-view")
        self.root.children = [
            w.HTML(f"{CSS}<h3>Federations</h3>"),
            self.message,
            self.listing,
            w.HBox([self.picker, button("Refresh", self.refresh)]),
            self.detail,
            self.owner_box,
            self.run_picker,
            self.run_view,
        ]
        if self.client is not None:
            self.refresh(select=name_or_id)

    # ---- who am I -------------------------------------------------------------------
    @property
    def me(self) -> dict[str, Any]:
        if self._me is None:
            self._me = dict(self.api("GET", "api/me"))
        return self._me

    def owns(self, fed: dict[str, Any]) -> bool:
        """May start runs (the API decides again): creator, owner organisation admin,
        platform admin."""
        me = self.me
        groups = set(me.get("groups") or [])
        return bool(
            me.get("admin")
            or me.get("name") == fed.get("owner")
            or f"org-{fed.get('owner_org')}-admins" in groups
        )

    # ---- federations ----------------------------------------------------------------
    def selected(self) -> dict[str, Any] | None:
        return next((f for f in self.federations if f["id"] == self.picker.value), None)

    def find(self, name_or_id: str | int) -> dict[str, Any] | None:
        """A federation by id (or its digits), or by name (ValueError if several share it)."""
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            return next((f for f in self.federations if f["id"] == int(name_or_id)), None)
        found = [f for f in self.federations if f["name"] == name_or_id]
        if len(found) > 1:
            owners = ", ".join(f"{f['owner_org']} (id {f['id']})" for f in found)
            raise ValueError(f"several federations are named {name_or_id}: {owners}; give the id")
        return found[0] if found else None

    def refresh(self, select: str | int | None = None) -> None:
        with self._lock:
            found = self.act(lambda: [self.me, self.api("GET", "api/federations")][1])
            if found is None:
                return
            self.federations = found
            rows = [
                [
                    esc(f["name"]),
                    esc(f["owner_org"]),
                    tag(f["state"]),
                    ", ".join(f"{esc(p['org'])} {tag(p['state'])}" for p in f["parties"])
                    or "<i>none invited</i>",
                ]
                for f in found
            ]
            self.listing.value = (
                table(["Federation", "Owner", "State", "Parties"], rows)
                if rows
                else "<i>No federation yet: your organisation owns none and is invited to none.</i>"
            )
            pick = self.picker.value
            if select is not None:
                chosen = self.act(lambda: self.find(select))
                if chosen is None:
                    if not self.error:
                        self.fail(f"Not found: no federation {select} that you may see.")
                    pick = None
                else:
                    pick = chosen["id"]
            options = [(f"{f['name']} ({f['owner_org']})", f["id"]) for f in found]
            ids = [i for _, i in options]
            pick = pick if pick in ids else (ids[0] if ids else None)
            if list(self.picker.options) != options:
                self.picker.options = options
            if self.picker.value != pick:
                self.picker.value = pick  # observed: shown
            else:
                self.show_selected()

    def show_selected(self) -> None:
        fed = self.selected()
        if fed is None:
            self.detail.value = self.run_view.value = ""
            self.owner_box.layout.display = "none"
            self.run_picker.options = []
            return
        parties = [
            [
                esc(p["org"]),
                tag(p["state"]),
                esc(p.get("user") or ""),
                esc(p.get("gpus", "")),
                esc(p.get("node") or ""),
                traffic(p.get("traffic")),
            ]
            for p in fed["parties"]
        ]
        secagg = "on" if fed.get("secure_aggregation") else "off"
        if fed.get("secure_aggregation_setting") is None:
            secagg += " (on from 3 parties)"
        self.detail.value = (
            f"<div class='werkhub-fed-facts' data-id='{esc(fed['id'])}'><b>{esc(fed['name'])}"
            f"</b> owned by {esc(fed['owner_org'])} ({esc(fed['owner'])}); {esc(fed['strategy'])}"
            f", {esc(fed['rounds'])} rounds, at least {esc(fed['min_parties'])} parties; secure "
            f"aggregation {secagg}"
            "</div>"
            + table(
                ["Organisation", "State", "Party user", "GPUs", "Node", "Sent / received"], parties
            )
        )
        owns = self.owns(fed)
        self.owner_box.layout.display = "" if owns else "none"
        if owns and self.rounds.value != fed["rounds"]:
            self.rounds.value = min(max(1, int(fed["rounds"])), self.rounds.max)
        self.load_runs(fed)

    # ---- runs -------------------------------------------------------------------------
    def load_runs(self, fed: dict[str, Any], select: int | None = None) -> None:
        runs = self.act(lambda: self.api("GET", f"api/federations/{fed['id']}/runs"))
        self.runs = sorted(runs or [], key=lambda r: r["id"], reverse=True)
        options = [(f"run {r['id']} ({r['status']})", r["id"]) for r in self.runs]
        ids = [i for _, i in options]
        keep = select if select in ids else self.run_picker.value
        pick = keep if keep in ids else (ids[0] if ids else None)
        if list(self.run_picker.options) != options:
            self.run_picker.options = options
        if self.run_picker.value != pick:
            self.run_picker.value = pick  # observed: shown
        else:
            self.show_run()

    def show_run(self) -> None:
        fed, rid = self.selected(), self.run_picker.value
        if fed is None or rid is None:
            self.run = None
            self.run_view.value = "<i>No runs yet.</i>" if fed is not None else ""
            return
        run = self.act(lambda: self.api("GET", f"api/federations/{fed['id']}/runs/{rid}"))
        if run is None:
            return
        self.run = run
        self.run_view.value = run_html(run, self.mlflow_ui)
        self.stop_button.disabled = run["status"] in ENDED
        if run["status"] not in ENDED and self._stop is None:
            self.watch()

    def start(self) -> dict[str, Any] | None:
        fed = self.selected()
        if fed is None:
            self.fail("Choose a federation first.")
            return None
        body = {"rounds": int(self.rounds.value)}
        run = self.act(lambda: self.api("POST", f"api/federations/{fed['id']}/runs", json=body))
        if run is None:
            return None
        self.load_runs(fed, select=run["id"])
        self.say(f"Run {run['id']} of {fed['name']} started: rounds appear here as they finish.")
        return run

    def stop_run(self) -> bool:
        fed, run = self.selected(), self.run
        if fed is None or run is None:
            self.fail("Choose a run first.")
            return False
        path = f"api/federations/{fed['id']}/runs/{run['id']}/stop"
        if self.act(lambda: self.api("POST", path)) is None and self.error:
            return False
        self.show_run()
        self.say(f"Run {run['id']} is stopping.")
        return True

    # ---- polling ------------------------------------------------------------------------
    def watch(self, on: bool = True) -> None:
        """Fetch the shown run again every ``poll_seconds`` until it ends, or stop."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if on and self.poll_seconds > 0:
            stop = self._stop = threading.Event()
            threading.Thread(target=self._watch, args=(stop,), daemon=True).start()

    def _watch(self, stop: threading.Event) -> None:
        until = time.monotonic() + self.poll_minutes * 60
        while not stop.wait(self.poll_seconds) and time.monotonic() < until:
            with self._lock:
                self.show_run()
                run = self.run
            if run is None or run["status"] in ENDED:
                break
        with self._lock:
            fed = self.selected()
            if fed is not None and self.run is not None and self.run["status"] in ENDED:
                self.load_runs(fed)  # the run picker's labels show the end
                self._ended(self.run)
            if self._stop is stop:  # last: who sees polling ended sees the final message
                self._stop = None

    def _ended(self, run: dict[str, Any]) -> None:
        if run["status"] == "finished":
            model = run.get("model") or {}
            registered = (
                f"; model {model['name']} version {model.get('version')} registered"
                if model.get("name")
                else ""
            )
            self.say(
                f"Run {run['id']} finished after {len(run.get('rounds') or [])} rounds{registered}."
            )
        elif run["status"] == "failed":
            self.fail(f"Run {run['id']} failed: {run.get('message') or 'no reason given'}")
        else:
            self.say(f"Run {run['id']} was stopped.")

    def wait(self, statuses: tuple[str, ...] = ENDED, timeout: float = 600) -> dict[str, Any]:
        """Fetch the shown run until its status is one of ``statuses``; it, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self.show_run()
                run = self.run
            if run is not None and run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run and run['id']} is {run and run['status']}")
            time.sleep(0.5)


def federation(
    name_or_id: str | int | None = None, client: WerkhubClient | None = None, **kw: Any
) -> FederationWidget:
    """Federations of your organisation: ``from werkhub_widgets import federation;
    federation()`` (or ``federation("quality")`` for one by name or id)."""
    return FederationWidget(client, name_or_id, **kw)


__all__ = ["FederationWidget", "ServiceError", "federation", "rounds_html", "run_html"]
