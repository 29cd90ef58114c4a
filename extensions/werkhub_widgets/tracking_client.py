"""A small MLflow REST client for the experiments widget.

Talks to the werkhub MLflow gateway at ``MLFLOW_TRACKING_URI`` with the hub token in
``MLFLOW_TRACKING_TOKEN`` (both set in every werkhub server); the gateway shows each
person only the experiments they own or that are shared with their groups.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from werkhub_widgets.client import ServiceError, _body, _detail

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
        self._http = httpx.Client(
            base_url=self.uri + "/", headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self._http.request(method, f"{API}/{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(0, f"MLflow cannot be reached: {exc}") from None
        if reply.status_code >= 400:
            body = _body(reply)
            message = body.get("message") if isinstance(body, dict) else None
            raise ServiceError(reply.status_code, message or _detail(reply), body)
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
