"""Registered models for the serving tests and benchmark: small pyfunc models written as
code files (MLflow's models-from-code), so the scoring server needs nothing of the tests.

Version ``tag`` of a model answers ``tag`` for every row, which shows which version
answered; a ``broken`` model logs fine but fails to load inside a scoring server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
from mlflow.models import infer_signature

from tests.support.mlflow_env import mlflow_env
from tests.support.wait import wait_for

CODE = """
import os
import mlflow


class Tagged(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        if {broken} and os.environ.get("__pyfunc_model_path__"):
            raise RuntimeError("this version cannot load its weights")

    def predict(self, context, model_input, params=None):
        return [{tag} + 0.0 * float(row.sum()) for _, row in model_input.iterrows()]


mlflow.models.set_model(Tagged())
"""
EXAMPLE = pd.DataFrame(
    {"temperature": [71.5, 80.25], "vibration": [0.12, 0.4], "current": [3.1, 2.9]}
)
SERVICE_API = "/services/werkhub/api"


def register_tagged(
    hub_url: str,
    token: str,
    user: str,
    model: str,
    tag: float,
    folder: Path,
    alias: str | None = None,
    broken: bool = False,
) -> str:
    """Log and register a version of ``model`` answering ``tag``; its version number."""
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / f"tagged_{str(tag).replace('.', '_')}_{int(broken)}.py"
    code.write_text(CODE.format(tag=float(tag), broken=broken))
    with mlflow_env(hub_url, token) as client:
        mlflow.set_experiment(f"{user}/serving")
        signature = infer_signature(EXAMPLE, [float(tag)] * len(EXAMPLE))
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                signature=signature,
                input_example=EXAMPLE,
                registered_model_name=model,
            )
        version = str(info.registered_model_version)
        if alias is not None:
            client.set_registered_model_alias(model, alias, version)
    return version


def set_alias(hub_url: str, token: str, model: str, alias: str, version: str) -> None:
    with mlflow_env(hub_url, token) as client:
        client.set_registered_model_alias(model, alias, version)


def invoke_body(rows: int = 2) -> dict[str, Any]:
    frame = pd.concat([EXAMPLE] * (rows // len(EXAMPLE) + 1)).head(rows)
    return {"dataframe_split": frame.to_dict(orient="split", index=False)}


def wait_state(
    api: httpx.Client, name: str, states: tuple[str, ...], timeout: float = 180, **params: Any
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        reply = api.get(f"{SERVICE_API}/endpoints/{name}", params=params)
        found = reply.json() if reply.status_code == 200 else {}
        return found if found.get("state") in states else None

    started = time.monotonic()
    try:
        return wait_for(reached, timeout=timeout, interval=0.25, what=f"{name} in {states}")
    except Exception:
        reply = api.get(f"{SERVICE_API}/endpoints/{name}", params=params)
        raise AssertionError(
            f"{name} not in {states} after {time.monotonic() - started:.0f} s: {reply.text}"
        ) from None
