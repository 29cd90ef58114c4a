"""An MLflow client set up only through the environment, as jobs and user servers are."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.tracking import MlflowClient

from werkhub.tracking.identity import client_env


@contextmanager
def mlflow_env(hub_url: str, token: str, **extra: str) -> Iterator[MlflowClient]:
    """The MLflow client of the owner of hub ``token`` through the hub's MLflow gateway;
    ``extra`` variables (e.g. JUPYTERHUB_USER) are set alongside. Everything is restored
    afterwards, MLFLOW_EXPERIMENT_ID included (mlflow.set_experiment() sets it, and later
    tests' kernels would inherit an experiment of this hub's MLflow)."""
    env = {**client_env(token, f"{hub_url}/services/mlflow"), **extra}
    saved = {k: os.environ.get(k) for k in (*env, "MLFLOW_EXPERIMENT_ID")}
    os.environ.update(env)
    try:
        yield MlflowClient()
    finally:
        mlflow.tracking.fluent._active_experiment_id = None
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
