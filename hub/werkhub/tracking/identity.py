"""MLflow identity: who a notebook, job or browser is when it talks to MLflow.

Every caller reaches MLflow through the werkhub gateway (service ``mlflow``), which
checks the hub token and forwards with the caller's own MLflow account. This module is
pure (standard library only): the client environment for servers and jobs, and the
gateway's secrets, from which every MLflow password is derived (nobody types them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the gateway's own MLflow administrator; a name no hub user can have (native user
#: names start with a letter or digit, and the gateway refuses this name anyway)
GATEWAY_ADMIN = "_werkhub-gateway"
#: MLflow roles that mirror hub groups; a share grants the role a permission
ROLE_PREFIX = "hub-group:"
#: MLflow workspace of the roles (workspaces are off; everything lives in "default")
WORKSPACE = "default"
#: permissions an experiment may be shared with (MLflow's own permission names)
SHARE_PERMISSIONS = ("READ", "EDIT")
#: the environment variable that tells processes where the gateway is
TRACKING_URI_VAR = "WERKHUB_MLFLOW_TRACKING_URI"

QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def gateway_url(port: int, base_url: str = "/") -> str:
    """The gateway as processes on this machine reach it (loopback, no proxy hop)."""
    return f"http://127.0.0.1:{port}{base_url}services/mlflow"


def client_env(token: str, tracking_uri: str | None = None) -> dict[str, str]:
    """Environment for an MLflow client acting as the owner of ``token`` (a hub token).

    ``tracking_uri`` defaults to ``$WERKHUB_MLFLOW_TRACKING_URI``, which werkhub sets
    for its services and user servers.
    """
    uri = tracking_uri or os.environ.get(TRACKING_URI_VAR, "")
    if not uri:
        raise ValueError(f"no MLflow gateway address: pass tracking_uri or set {TRACKING_URI_VAR}")
    if not token:
        raise ValueError("an MLflow identity needs a hub token")
    return {**QUIET_ENV, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_TOKEN": token}


def spawner_token(spawner: Any) -> str:
    """``Spawner.environment`` value: the server's own hub token is its MLflow identity."""
    return str(spawner.api_token or "")


def role_name(group: str) -> str:
    return f"{ROLE_PREFIX}{group}"


def group_of_role(name: str) -> str | None:
    return name[len(ROLE_PREFIX) :] if name.startswith(ROLE_PREFIX) else None


@dataclass(frozen=True)
class GatewaySecrets:
    """One random key (state folder, mode 0600); every password is an HMAC of it.

    Derived passwords survive restarts without a password table, and the gateway and the
    werkhub service agree on them without talking to each other.
    """

    key: bytes

    FILE = "mlflow-gateway-key"

    @classmethod
    def load_or_create(cls, secrets_dir: Path) -> GatewaySecrets:
        path = secrets_dir / cls.FILE
        if not path.exists():
            secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process was first
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        os.chmod(path, 0o600)
        text = path.read_text().strip()
        if len(text) < 32:
            raise RuntimeError(f"{path} is damaged (too short); delete it to make a new key")
        return cls(text.encode())

    @classmethod
    def load(cls, secrets_dir: Path) -> GatewaySecrets:
        return cls((secrets_dir / cls.FILE).read_text().strip().encode())

    def _derive(self, purpose: str) -> str:
        return hmac.new(self.key, purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def admin_password(self) -> str:
        return self._derive("mlflow-admin")

    @property
    def flask_secret(self) -> str:
        return self._derive("mlflow-flask-secret")

    def user_password(self, name: str) -> str:
        return self._derive(f"mlflow-user:{name}")
