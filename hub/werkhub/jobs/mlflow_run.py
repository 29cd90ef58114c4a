"""The MLflow run of one job run, spoken over MLflow's REST API with httpx.

``import mlflow`` alone costs more than a second and its client makes several round trips
per call; a job needs six small requests (experiment, run, params, two artifacts, final
status), so :class:`JobTracker` sends exactly those. The protocol is MLflow's public REST
API (``/api/2.0/mlflow/...``) and its artifact proxy (``/api/2.0/mlflow-artifacts/...``),
the same endpoints the MLflow client uses; identity comes from the same environment
variables (``MLFLOW_TRACKING_TOKEN`` as a bearer token, or ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``). Where the tracking URI is not HTTP (a file or database URI)
or the run's artifact store is not served by the tracking server (``s3://`` and the like),
the MLflow client does that part instead.

A tracking failure never stops the report: it is kept in ``error`` and the job goes on.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from werkhub.errors import Upstream

log = logging.getLogger("werkhub.jobs.mlflow_run")

FINAL_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "timed_out": "KILLED"}
ARTIFACT_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"
CONTENT_TYPES = {".html": "text/html", ".ipynb": "application/x-ipynb+json"}


class TrackingError(Upstream):
    """MLflow refused a request or could not be reached; the message says which."""


def param_text(value: Any) -> str:
    # str(), as mlflow.log_params writes values: the notebook may log the same ones again
    return str(value)[:6000]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class RestClient:
    """The few MLflow REST calls a job run needs (tracking URI ``http(s)://...``)."""

    def __init__(self, tracking_uri: str, environ: dict[str, str] | None = None) -> None:
        from werkhub import http

        env = os.environ if environ is None else environ
        self.base = tracking_uri.rstrip("/")
        auth: Any = None
        headers: dict[str, str] = {}
        if env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD"):
            auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        elif env.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        verify: Any = True
        if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            verify = False
        elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        self.retries = max(0, _env_int("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 4))
        timeout = float(_env_int("MLFLOW_HTTP_REQUEST_TIMEOUT", 20))
        self.http = http.client(auth=auth, extra_headers=headers, verify=verify, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """JSON answer of ``method url``; retried on connection errors and 429/5xx."""
        import httpx

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                if last:
                    raise TrackingError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code < 400:
                    return response.json() if response.content else {}
                if last or response.status_code not in (429, 500, 502, 503, 504):
                    raise TrackingError(_error_text(method, url, response))
            time.sleep(min(4.0, 0.5 * 2**attempt))  # 0.5, 1, 2, 4 s
        raise AssertionError("unreachable")

    def api(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        return self.request(method, f"{self.base}/api/2.0/mlflow/{endpoint}", **kwargs)

    def experiment_id(self, name: str) -> str:
        """Id of the experiment ``name``, created when missing (also by a racing run)."""
        for _ in range(2):
            try:
                found = self.api("GET", "experiments/get-by-name", params={"experiment_name": name})
                return str(found["experiment"]["experiment_id"])
            except TrackingError as exc:
                if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                    raise
            try:
                return str(
                    self.api("POST", "experiments/create", json={"name": name})["experiment_id"]
                )
            except TrackingError as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                    raise
        raise TrackingError(f"experiment {name!r} could neither be found nor created")

    def artifact_url(self, artifact_uri: str, name: str) -> str | None:
        """Where to PUT the artifact ``name`` of a run, or None when the run's artifact
        store is not served over HTTP by the tracking server."""
        parsed = urlparse(artifact_uri)
        if parsed.scheme == "mlflow-artifacts":
            tracking = urlparse(self.base)
            netloc = parsed.netloc or tracking.netloc
            path = re.sub("/+", "/", f"{tracking.path}/{ARTIFACT_ROUTE}/{parsed.path}")
            return f"{tracking.scheme}://{netloc}{quote(path)}/{quote(name)}"
        if parsed.scheme in ("http", "https"):
            return f"{artifact_uri.rstrip('/')}/{quote(name)}"
        return None


def _error_text(method: str, url: str, response: Any) -> str:
    try:
        data = response.json()
        detail = f"{data.get('error_code', '')}: {data.get('message', '')}".strip(": ")
    except ValueError:
        detail = response.text[:300]
    return f"{method} {url} answered {response.status_code}: {detail}"


class JobTracker:
    """The MLflow run of one job run (tags, params, artifacts, final status)."""

    def __init__(self, experiment: str, tags: dict[str, str]) -> None:
        self.experiment = experiment
        self.tags = tags
        self.run_id: str | None = None
        self.artifact_uri = ""
        self.error: str | None = None
        self.uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        self.rest: RestClient | None = None
        self._client: Any = None  # mlflow's own client, only where REST cannot do it

    def _mlflow_client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def start(self, params: dict[str, Any], run_name: str) -> float:
        """Create the run (before the kernel starts: it continues this run)."""
        t0 = time.perf_counter()
        try:
            if urlparse(self.uri).scheme in ("http", "https"):
                self._start_rest(params, run_name)
            else:
                self._start_client(params, run_name)
        except Exception as exc:  # tracking must not stop the report from being made
            self.error = f"MLflow: {type(exc).__name__}: {exc}"[:500]
            log.warning("could not start the MLflow run: %s", self.error)
        return time.perf_counter() - t0

    def _start_rest(self, params: dict[str, Any], run_name: str) -> None:
        self.rest = RestClient(self.uri)
        experiment_id = self.rest.experiment_id(self.experiment)
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": v} for k, v in self.tags.items()],
        }
        if self.tags.get("mlflow.user"):
            body["user_id"] = self.tags["mlflow.user"]
        info = self.rest.api("POST", "runs/create", json=body)["run"]["info"]
        self.run_id = str(info["run_id"])
        self.artifact_uri = str(info.get("artifact_uri") or "")
        batch = [{"key": k, "value": param_text(v)} for k, v in params.items()]
        self.rest.api(
            "POST",
            "runs/log-batch",
            json={
                "run_id": self.run_id,
                "params": batch,
                "tags": [{"key": "werkhub", "value": "job"}],
            },
        )

    def _start_client(self, params: dict[str, Any], run_name: str) -> None:
        from mlflow.entities import Param, RunTag

        client = self._mlflow_client()
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(self.experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=self.tags)
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        batch = [Param(k, param_text(v)) for k, v in params.items()]
        client.log_batch(self.run_id, params=batch, tags=[RunTag("werkhub", "job")])

    def finish(self, status: str, artifacts: list[Path]) -> float:
        """Log ``artifacts`` (those that exist), tag the status and end the run."""
        t0 = time.perf_counter()
        if self.run_id is None:
            return 0.0
        try:
            for path in artifacts:
                if path.exists():
                    self._log_artifact(path)
            final = FINAL_STATUS.get(status, "FAILED")
            if self.rest is not None:
                tag = {"run_id": self.run_id, "key": "werkhub.status", "value": status}
                self.rest.api("POST", "runs/set-tag", json=tag)
                end = {"run_id": self.run_id, "status": final, "end_time": int(time.time() * 1000)}
                self.rest.api("POST", "runs/update", json=end)
            else:
                self._client.set_tag(self.run_id, "werkhub.status", status)
                self._client.set_terminated(self.run_id, final)
        except Exception as exc:
            self.error = f"MLflow: {type(exc).__name__}: {exc}"[:500]
            log.warning("could not finish the MLflow run: %s", self.error)
        finally:
            if self.rest is not None:
                self.rest.close()
        return time.perf_counter() - t0

    def _log_artifact(self, path: Path) -> None:
        url = self.rest.artifact_url(self.artifact_uri, path.name) if self.rest else None
        if url is None or self.rest is None:
            self._mlflow_client().log_artifact(self.run_id, str(path))
            return
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        data = path.read_bytes()  # bytes, not a stream: a retry sends the whole file again
        self.rest.request("PUT", url, content=data, headers={"Content-Type": content_type})
