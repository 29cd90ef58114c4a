"""Names every process of an installation agrees on: hub service names, the variables the
hub hands to its services, the environment that keeps user code and services offline.

Pure (standard library only). ``werkhub.app.configurer`` writes these into the hub's
configuration; the services, spawners and job runners read them from here, so no package
has to import ``werkhub.app``.
"""

from __future__ import annotations

import hashlib

SERVICE_NAME = "werkhub"
MLFLOW_NAME = "mlflow"
CLI_SERVICE = "werkhub-cli"
SPAWNER_SERVICE = "werkhub-spawner"
#: the service learns the spawner token's digest, never the token itself
SPAWNER_DIGEST_VAR = "WERKHUB_SPAWNER_TOKEN_SHA256"

#: nothing phones home: MLflow, Jupyter and Hugging Face libraries told so in every process
SOVEREIGN_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "JUPYTER_NO_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def token_digest(token: str) -> str:
    """How the werkhub service recognises a token it was told about (sha256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def endpoints_prefix(base_url: str) -> str:
    """Where model endpoints answer below the hub's base URL: ``<base_url>endpoints/``."""
    inner = base_url.strip("/")
    return f"/{inner}/endpoints/" if inner else "/endpoints/"


#: How long werkhub's own servers (the service, the MLflow gateway, MLflow) keep an idle connection.
#: configurable-http-proxy keeps its upstream connections open without a limit of its own
#: and reuses them; a server that closes an idle one after uvicorn's default 5 s races a
#: request the proxy is sending on it, and the user gets the proxy's 503 (ECONNRESET). An
#: hour, as JupyterHub's own Tornado servers, makes that race as rare as an hour's idling.
SERVER_KEEP_ALIVE = 3600
