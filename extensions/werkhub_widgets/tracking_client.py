"""A small MLflow REST client for the experiments widget.

Talks to the werkhub MLflow gateway at ``MLFLOW_TRACKING_URI`` with the hub token in
``MLFLOW_TRACKING_TOKEN`` (both set in every werkhub server); the gateway shows each
person only the experiments they own or that are shared with their groups.
"""

from __future__ import annotations

import os
from typing import Any

from werkhub_widgets.http import ServiceError, client, send

API = "api/2.0/mlflow"


class TrackingClient:
    def __init__(
        self, tracking_uri: str | None = None, token: str | None = None, timeout: float = 15
    ) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        token = token or os.environ.get("MLFLOW_TRACKING_TOKEN", "")
        if not uri.startswith("http") or not token:
            raise ServiceError(
                0,
                "MLflow is not set up in this server: MLFLOW_TRACKING_URI or its token is missing.",
            )
        self.uri = uri.rstrip("/")
        self._http = client(self.uri + "/", bearer=token, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = send(self._http, method, f"{API}/{path}", "MLflow", **kwargs)
        return reply.json() if reply.content else {}

    def experiments(self, max_results: int = 200) -> list[dict[str, Any]]:
        answer = self.call(
            "POST",
            "experiments/search",
            json={"max_results": max_results, "view_type": "ACTIVE_ONLY"},
        )
        return answer.get("experiments", [])

    def runs(self, experiment_ids: list[str], max_results: int = 200) -> list[dict[str, Any]]:
        if not experiment_ids:
            return []
        answer = self.call(
            "POST",
            "runs/search",
            json={
                "experiment_ids": experiment_ids,
                "max_results": max_results,
                "order_by": ["attributes.start_time DESC"],
            },
        )
        return answer.get("runs", [])

    def history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        answer = self.call(
            "GET", "metrics/get-history", params={"run_id": run_id, "metric_key": key}
        )
        return answer.get("metrics", [])

    def close(self) -> None:
        self._http.close()
