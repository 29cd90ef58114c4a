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
