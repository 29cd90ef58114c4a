"""Register the model an MLflow run logged as a new version of a registered model, through
the werkhub MLflow gateway with the widgets' small REST client (no ``mlflow`` import).

Does what ``mlflow.register_model("runs:/<run>/model", name)`` does on MLflow 3: the run's
logged model of that name (``models:/<model_id>``), or for runs logged the older way the
``model`` folder among the run's artifacts. The gateway keeps registered model names in
name spaces: ``<user>~...`` is the user's own.
"""

from __future__ import annotations

import re
import time
from typing import Any

from werkhub_widgets.http import ServiceError
from werkhub_widgets.tracking_client import TrackingClient

#: MLflow's own rule for run ids (and no quote, so a filter cannot be broken)
RUN_ID = re.compile(r"^[a-zA-Z0-9][\w-]{0,255}$")
ALREADY = "RESOURCE_ALREADY_EXISTS"


def own_name(name: str, user: str) -> str:
    """``name`` in the user's name space: ``press`` -> ``ann~press``; a name that already
    names a space (``team~press``) stays as it is."""
    name = name.strip()
    if not name:
        raise ValueError("register as: give the registered model a name")
    if "/" in name or ":" in name:
        raise ValueError(f"register as: '{name}' may not contain '/' or ':'")
    return name if "~" in name else f"{user}~{name}"


def run_model(
    tracking: TrackingClient, run_id: str, artifact_path: str = "model"
) -> tuple[str, str, str | None]:
    """(source, run id, logged model id or None) of the model ``run_id`` logged as
    ``artifact_path``; ValueError when it logged none."""
    run_id = run_id.strip()
    if not RUN_ID.match(run_id):
        raise ValueError(f"run id: '{run_id[:60]}' is no MLflow run id")
    run = tracking.call("GET", "runs/get", params={"run_id": run_id})["run"]
    info = run["info"]
    found = tracking.call(
        "POST",
        "logged-models/search",
        json={
            "experiment_ids": [info["experiment_id"]],
            "filter": f"source_run_id = '{run_id}'",
            "max_results": 100,
        },
    ).get("models", [])
    named = [m["info"] for m in found if m.get("info", {}).get("name") == artifact_path]
    if named:
        steps = {
            o["model_id"]: int(o.get("step", 0))
            for o in (run.get("outputs") or {}).get("model_outputs", [])
        }
        best = max(
            named,
            key=lambda m: (steps.get(m["model_id"], 0), int(m.get("creation_timestamp_ms", 0))),
        )
        return f"models:/{best['model_id']}", run_id, best["model_id"]
    files = tracking.call(
        "GET", "artifacts/list", params={"run_id": run_id, "path": artifact_path}
    ).get("files", [])
    if any(f.get("path", "").rsplit("/", 1)[-1] == "MLmodel" for f in files):
        return f"{info['artifact_uri']}/{artifact_path}", run_id, None
    raise ValueError(f"run {run_id} logged no model named '{artifact_path}'")


def register_run(
    tracking: TrackingClient,
    run_id: str,
    name: str,
    artifact_path: str = "model",
    timeout: float = 120,
) -> dict[str, Any]:
    """Register the run's model as a new version of ``name`` (created if missing); the
    model version once MLflow says it is READY."""
    source, run_id, model_id = run_model(tracking, run_id, artifact_path)
    try:
        tracking.call("POST", "registered-models/create", json={"name": name})
    except ServiceError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        if body.get("error_code") != ALREADY:
            raise
    request: dict[str, Any] = {"name": name, "source": source, "run_id": run_id}
    if model_id:
        request["model_id"] = model_id
    version = tracking.call("POST", "model-versions/create", json=request)["model_version"]
    deadline = time.monotonic() + timeout
    while version.get("status", "READY") == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise ValueError(f"version {version['version']} of {name} is still not ready")
        time.sleep(0.5)
        version = tracking.call(
            "GET", "model-versions/get", params={"name": name, "version": version["version"]}
        )["model_version"]
    if version.get("status") == "FAILED_REGISTRATION":
        raise ValueError(
            f"MLflow could not register version {version['version']} of {name}: "
            f"{version.get('status_message', '')}"
        )
    return version
