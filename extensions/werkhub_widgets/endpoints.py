"""``endpoints()``: serve a model from a notebook, watch it, try it.

Deploy a registered model (alias or version) or the model of an MLflow run (registered
first as a new version of ``<you>~<name>`` through the MLflow gateway), see your endpoints
and their state, watch one (state and requests/latency per minute, refreshed every few
seconds) and try it with the model's registered input example. Everything goes through the
werkhub service's API (``/api/endpoints``) with the server's hub token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any
from urllib.parse import urljoin

import ipywidgets as w

from werkhub_widgets._ui import CSS, Panel, button, esc, table
from werkhub_widgets.client import ServiceError, WerkhubClient
from werkhub_widgets.minute_plot import plots
from werkhub_widgets.model_registry import own_name, register_run
from werkhub_widgets.tracking_client import TrackingClient

SOURCES = [("Registered model", "model"), ("MLflow run", "run")]
#: how long "Try it" waits for an answer (a scaled-to-zero endpoint starts first)
TRY_TIMEOUT = 180
LABEL = {"description_width": "110px"}
SHORT = {"description_width": "initial"}
NARROW = {"width": "220px"}
STATE_TAG = {"ready": "#dff3e4", "starting": "#e6eef6", "failed": "#fbe3e4"}


def endpoint_name(model: str) -> str:
    """A valid endpoint name from a model name: ``ann~Press Quality`` -> ``press-quality``."""
    base = re.sub(r"[^a-z0-9-]+", "-", model.split("~")[-1].lower()).strip("-")
    base = re.sub(r"^[^a-z]+", "", base)[:40].rstrip("-")
    return base or "model"


def _text(description: str, value: str = "", placeholder: str = "", cls: str = "") -> Any:
    box = w.Text(
        value=value,
        description=description,
        placeholder=placeholder,
        style=LABEL,
        layout=w.Layout(width="460px"),
    )
    if cls:
        box.add_class(cls)
    return box


class EndpointsWidget(Panel):
    def __init__(
        self,
        client: WerkhubClient | None = None,
        tracking: TrackingClient | None = None,
        watch_seconds: float = 5,
        watch_minutes: float = 30,
    ) -> None:
        super().__init__(client)
        self._tracking = tracking
        self.watch_seconds = watch_seconds
        self.watch_minutes = watch_minutes
        self.endpoints: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []
        self.answer: Any = None
        self._user: str | None = None
        self._lock = threading.RLock()
        self._stop: threading.Event | None = None
        self.root.add_class("werkhub-endpoints")
        # -- what to deploy
        self.source = w.ToggleButtons(options=SOURCES, value="model")
        self.source.add_class("werkhub-ep-source")
        self.model = _text("Model", placeholder="you~classifier", cls="werkhub-ep-model")
        self.pin = w.Dropdown(
            options=[("alias", "alias"), ("number", "version")],
            value="alias",
            description="Version by",
            style=LABEL,
            layout=w.Layout(width="240px"),
        )
        self.reference = w.Text(value="champion", layout=w.Layout(width="200px"))
        self.reference.add_class("werkhub-ep-reference")
        self.run_id = _text("Run ID", placeholder="from MLflow", cls="werkhub-ep-run")
        self.register_as = _text(
            "Register as", placeholder="name (in your ~ space)", cls="werkhub-ep-register"
        )
        self.name = _text(
            "Endpoint name", placeholder="letters, digits, dashes", cls="werkhub-ep-name"
        )
        self.always_on = w.Checkbox(
            value=True, description="Keep running (else stop when idle)", indent=False
        )
        self.always_on.layout.width = "auto"
        self.idle = w.BoundedIntText(
            value=30, min=1, max=10080, description="Idle minutes", style=SHORT, layout=NARROW
        )
        self.cpu = w.BoundedFloatText(
            value=1.0, min=0.1, max=64, step=0.5, description="CPUs", style=LABEL, layout=NARROW
        )
        self.memory = w.Text(value="2G", description="Memory", style=SHORT, layout=NARROW)
        self.gpu = w.Text(description="GPU type", placeholder="none", style=SHORT, layout=NARROW)
        self.groups = _text("Share with", placeholder="hub groups, comma separated")
        self.logging = w.Checkbox(
            value=False, description="Keep the last 100 requests", indent=False
        )
        self.logging.layout.width = "auto"
        self.model_box = w.VBox([self.model, w.HBox([self.pin, self.reference])])
        self.run_box = w.VBox([self.run_id, self.register_as], layout=w.Layout(display="none"))
        self.source.observe(lambda _c: self._source_changed(), names="value")
        self.model.observe(lambda _c: self._suggest_name(), names="value")
        self.register_as.observe(lambda _c: self._suggest_name(), names="value")
        deploy = button(
            "Deploy", self.deploy, "Serve this model as an endpoint", button_style="primary"
        )
        deploy.add_class("werkhub-ep-deploy")
        # -- my endpoints
        self.listing = w.HTML()
        self.listing.add_class("werkhub-ep-list")
        self.picker = w.Dropdown(description="Endpoint", options=[])
        self.picker.add_class("werkhub-ep-picker")
        self.picker.observe(lambda _c: self.show_selected(), names="value")
        self.watching = w.ToggleButton(
            value=False, description="Watch", icon="eye", tooltip="Refresh every few seconds"
        )
        self.watching.add_class("werkhub-ep-watch")
        self.watching.observe(lambda c: self._run_watch(c["new"]), names="value")
        self.detail = w.HTML()
        self.detail.add_class("werkhub-ep-detail")
        self.output = w.HTML()
        self.output.add_class("werkhub-ep-answer")
        try_it = button(
            "Try it", self.try_it, "Send the registered input example", button_style="info"
        )
        try_it.add_class("werkhub-ep-try")
        remove = button(
            "Delete", self.delete, "Stop and delete this endpoint", button_style="danger"
        )
        self.root.children = [
            w.HTML(f"{CSS}<h3>Model endpoints</h3>"),
            self.message,
            self.source,
            self.model_box,
            self.run_box,
            self.name,
            w.HBox([self.cpu, self.memory, self.gpu], layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.always_on, self.idle], layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.groups, self.logging], layout=w.Layout(flex_flow="row wrap")),
            deploy,
            w.HTML("<b>My endpoints</b> (and those shared with my groups)"),
            self.listing,
            w.HBox([self.picker, button("Refresh", self.refresh), self.watching, try_it, remove]),
            self.detail,
            self.output,
        ]
        if self.client is not None:
            self.refresh()

    # ---- deploying -------------------------------------------------------------------
    def _source_changed(self) -> None:
        run = self.source.value == "run"
        self.run_box.layout.display = "" if run else "none"
        self.model_box.layout.display = "none" if run else ""
        self._suggest_name()

    def _suggest_name(self) -> None:
        given = self.register_as.value if self.source.value == "run" else self.model.value
        if given.strip():
            self.name.value = endpoint_name(given)

    @property
    def user(self) -> str:
        if self._user is None:
            self._user = str(self.api("GET", "api/me")["name"])
        return self._user

    @property
    def tracking(self) -> TrackingClient:
        if self._tracking is None:
            self._tracking = TrackingClient()
        return self._tracking

    def spec(self, model: str, version: str | None = None) -> dict[str, Any]:
        """The ``POST /api/endpoints`` body of the form (``version`` pins one)."""
        name = self.name.value.strip()
        if not name:
            raise ValueError("endpoint name: give the endpoint a name")
        body: dict[str, Any] = {
            "name": name,
            "model": model,
            "resources": {"cpu": self.cpu.value, "memory": self.memory.value.strip()},
            "min_replicas": 1 if self.always_on.value else 0,
            "idle_minutes": self.idle.value,
            "groups": [g.strip() for g in self.groups.value.split(",") if g.strip()],
            "request_logging": self.logging.value,
        }
        if self.gpu.value.strip():
            body["resources"]["gpu"] = {"type": self.gpu.value.strip(), "count": 1}
        if version is not None:
            body["version"] = version
        elif self.pin.value == "version":
            body["version"] = self.reference.value.strip()
        else:
            body["alias"] = self.reference.value.strip() or "champion"
        return body

    def register(self) -> dict[str, Any]:
        """Register the run's ``model`` as a new version of ``<me>~<register as>``."""
        if not self.run_id.value.strip():
            raise ValueError("run id: paste the id of the MLflow run whose model to serve")
        name = own_name(self.register_as.value or self.name.value, self.user)
        return register_run(self.tracking, self.run_id.value, name)

    def deploy(self) -> dict[str, Any] | None:
        def go() -> dict[str, Any]:
            if self.source.value == "run":
                version = self.register()
                self.say(
                    f"Registered version {version['version']} of {version['name']}; deploying..."
                )
                return self.api(
                    "POST", "api/endpoints", json=self.spec(version["name"], version["version"])
                )
            if not self.model.value.strip():
                raise ValueError("model: name a registered model, e.g. you~classifier")
            return self.api("POST", "api/endpoints", json=self.spec(self.model.value.strip()))

        created = self.act(go)
        if created is None:
            return None
        ref = f"version {created['version']}" if created["version"] else f"alias {created['alias']}"
        self.refresh(select=(created["owner"], created["name"]))
        self.say(f"Endpoint {created['name']} is starting with {created['model']} {ref}.")
        self.watch(self.watch_seconds > 0)
        return created

    # ---- watching --------------------------------------------------------------------
    def selected(self) -> dict[str, Any] | None:
        key = self.picker.value
        return next((e for e in self.endpoints if (e["owner"], e["name"]) == key), None)

    def refresh(self, select: tuple[str, str] | None = None) -> None:
        with self._lock:
            found = self.act(lambda: [self.user, self.api("GET", "api/endpoints")][1])
            if found is None:
                return
            self.endpoints = found
            rows = [
                [
                    esc(e["name"]) + ("" if e["owner"] == self._user else f" ({esc(e['owner'])})"),
                    esc(e["model"]),
                    esc(e["serving_version"] or "-"),
                    self._state(e),
                    f"<code>{esc(e['url'])}</code>",
                ]
                for e in found
            ]
            self.listing.value = (
                table(["Endpoint", "Model", "Version", "State", "URL"], rows)
                if rows
                else "<i>No endpoints yet: deploy a model above.</i>"
            )
            keep = select or self.picker.value
            options = [(f"{e['owner']}/{e['name']}", (e["owner"], e["name"])) for e in found]
            values = [v for _, v in options]
            pick = keep if keep in values else (values[0] if values else None)
            if list(self.picker.options) != options:
                self.picker.options = options  # may change the value: observed, shown
            if self.picker.value != pick:
                self.picker.value = pick  # observed: shown
            else:
                self.show_selected()

    @staticmethod
    def _state(e: dict[str, Any]) -> str:
        colour = STATE_TAG.get(e["state"], "#eee")
        return (
            f"<span class='wh-tag werkhub-state' style='background:{colour}'>"
            f"{esc(e['state'].replace('_', ' '))}</span>"
        )

    def show_selected(self) -> None:
        e = self.selected()
        if e is None:
            self.detail.value = ""
            return
        params = {"owner": e["owner"], "minutes": 60}
        figures = self.act(
            lambda: self.api("GET", f"api/endpoints/{e['name']}/metrics", params=params)
        )
        self.figures = figures or []
        reason = f"<div class='wh-error'>{esc(e['reason'])}</div>" if e["reason"] else ""
        tail = (
            f"<details><summary>Last log lines</summary><pre>{esc(e['log_tail'])}</pre></details>"
            if e["log_tail"]
            else ""
        )
        self.detail.value = (
            f"<div class='werkhub-ep-state' data-state='{esc(e['state'])}'><b>{esc(e['name'])}</b> "
            f"{self._state(e)} serving version {esc(e['serving_version'] or '-')}; "
            f"POST <code>{esc(e['url'])}</code></div>{reason}{tail}"
            f"{plots(self.figures, time.time())}"
        )

    def watch(self, on: bool = True) -> None:
        """Refresh every ``watch_seconds`` (for ``watch_minutes`` at most), or stop."""
        if self.watching.value != on:
            self.watching.value = on  # the toggle's observer starts or stops it
        else:
            self._run_watch(on)

    def _run_watch(self, on: bool) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if on and self.watch_seconds > 0:
            stop = self._stop = threading.Event()
            threading.Thread(target=self._watch, args=(stop,), daemon=True).start()

    def _watch(self, stop: threading.Event) -> None:
        until = time.monotonic() + self.watch_minutes * 60
        while not stop.wait(self.watch_seconds) and time.monotonic() < until:
            self.refresh()
        if not stop.is_set():
            self.watching.value = False

    def wait(self, states: tuple[str, ...] = ("ready",), timeout: float = 180) -> dict[str, Any]:
        """Refresh until the selected endpoint is in one of ``states``; it, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            e = self.selected()
            if e is not None and e["state"] in states:
                return e
            if time.monotonic() > deadline:
                raise TimeoutError(f"{e and e['name']} is {e and e['state']}, not {states}")
            time.sleep(0.5)

    # ---- trying ----------------------------------------------------------------------
    def try_it(self) -> Any:
        """POST the registered input example to the selected endpoint; its answer."""
        e = self.selected()
        if e is None:
            self.fail("Choose an endpoint first (deploy one, or press Refresh).")
            return None

        def go() -> tuple[bytes, Any, float]:
            assert self.client is not None
            example = self.client.raw(
                "GET", f"api/endpoints/{e['name']}/example", params={"owner": e["owner"]}
            )
            started = time.monotonic()
            answer = self.client.request(
                "POST",
                urljoin(self.client.base_url, e["url"]),
                content=example,
                headers={"Content-Type": "application/json"},
                timeout=TRY_TIMEOUT,
            )
            return example, answer, (time.monotonic() - started) * 1000

        done = self.act(go)
        if done is None:
            return None
        example, self.answer, ms = done
        self.output.value = (
            f"<b>Request</b> (the registered input example)<pre>{esc(_pretty(example))}</pre>"
            f"<b>Answer</b> in {ms:.0f} ms<pre class='werkhub-ep-result'>"
            f"{esc(json.dumps(self.answer, indent=1)[:4000])}</pre>"
        )
        self.say(f"{e['name']} answered in {ms:.0f} ms.")
        self.refresh()
        return self.answer

    def delete(self) -> bool:
        e = self.selected()
        if e is None:
            self.fail("Choose an endpoint first.")
            return False
        params = {"owner": e["owner"]}
        self.act(lambda: self.api("DELETE", f"api/endpoints/{e['name']}", params=params))
        if self.error:
            return False
        self.output.value = ""
        self.refresh()
        self.say(f"Endpoint {e['name']} deleted.")
        return True


def _pretty(raw: bytes, limit: int = 2000) -> str:
    try:
        return json.dumps(json.loads(raw), indent=1)[:limit]
    except ValueError:
        return raw.decode(errors="replace")[:limit]


def endpoints(
    client: WerkhubClient | None = None, tracking: TrackingClient | None = None, **kw: Any
) -> EndpointsWidget:
    """Serve, watch and try models: ``from werkhub_widgets import endpoints; endpoints()``."""
    return EndpointsWidget(client, tracking, **kw)


__all__ = ["EndpointsWidget", "ServiceError", "endpoint_name", "endpoints"]
