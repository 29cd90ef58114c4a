"""MLflow identity wiring: client environment, gateway secrets, hub configuration."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from werkhub.app.configurer import Runtime, apply_config
from werkhub.config.load import ConfigError, parse_config
from werkhub.config.paths import StatePaths
from werkhub.tracking.gateway import auth_ini, basic
from werkhub.tracking.identity import (
    GATEWAY_ADMIN,
    GatewaySecrets,
    client_env,
    gateway_url,
    group_of_role,
    role_name,
    spawner_token,
)
from werkhub.tracking.routes import HUB_ACCOUNTS, refusal


def build(data: dict | None = None) -> Config:
    c = Config()
    runtime = Runtime(state=StatePaths.at("/srv/wh"), python="/venv/bin/python")
    apply_config(parse_config(data), c, runtime)
    return c


def services(c: Config) -> dict[str, dict]:
    return {s["name"]: s for s in c.JupyterHub.services}


def test_client_env_points_at_the_gateway_with_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    env = client_env("tok-123", "http://127.0.0.1:10102/services/mlflow")
    assert env == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:10102/services/mlflow",
        "MLFLOW_TRACKING_TOKEN": "tok-123",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    monkeypatch.setenv("WERKHUB_MLFLOW_TRACKING_URI", "http://127.0.0.1:9/services/mlflow")
    assert client_env("t")["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9/services/mlflow"
    with pytest.raises(ValueError, match="hub token"):
        client_env("")
    monkeypatch.delenv("WERKHUB_MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="WERKHUB_MLFLOW_TRACKING_URI"):
        client_env("t")


def test_gateway_url_follows_base_url() -> None:
    assert gateway_url(10102) == "http://127.0.0.1:10102/services/mlflow"
    assert gateway_url(5, "/werkhub/") == "http://127.0.0.1:5/werkhub/services/mlflow"


def test_secrets_are_private_stable_and_distinct(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    keys = GatewaySecrets.load_or_create(folder)
    path = folder / GatewaySecrets.FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = GatewaySecrets.load_or_create(folder)
    assert again == keys == GatewaySecrets.load(folder)
    passwords = {keys.admin_password, keys.flask_secret, keys.user_password("alice")}
    passwords.add(keys.user_password("bob"))
    assert len(passwords) == 4 and all(len(p) >= 32 for p in passwords)
    other = GatewaySecrets.load_or_create(tmp_path / "elsewhere")
    assert other.user_password("alice") != keys.user_password("alice")
    path.write_text("short")
    with pytest.raises(RuntimeError, match="damaged"):
        GatewaySecrets.load_or_create(folder)


def test_roles_mirror_groups() -> None:
    assert role_name("quality") == "hub-group:quality"
    assert group_of_role("hub-group:quality") == "quality"
    assert group_of_role("__user_3__") is None


def test_gateway_replaces_mlflow_server_and_keeps_the_public_url() -> None:
    c = build()
    mlflow = services(c)["mlflow"]
    assert mlflow["url"] == "http://127.0.0.1:10102"
    assert mlflow["command"] == ["/venv/bin/python", "-m", "werkhub.tracking.gateway"]
    assert mlflow["oauth_no_confirm"] is True
    env = mlflow["environment"]
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DO_NOT_TRACK"] == "true"
    assert env["WERKHUB_STATE"] == "/srv/wh"
    assert env["WERKHUB_MLFLOW_INTERNAL_PORT"] == "0"
    assert env["WERKHUB_MLFLOW_AUTH_DB"] == "sqlite:////srv/wh/mlflow/auth.db"
    server = json.loads(env["WERKHUB_MLFLOW_SERVER"])
    assert server[:4] == ["/venv/bin/python", "-m", "mlflow", "server"]
    assert server[server.index("--app-name") + 1] == "basic-auth"
    assert server[server.index("--host") + 1] == "127.0.0.1"
    assert server[server.index("--backend-store-uri") + 1] == "sqlite:////srv/wh/mlflow/mlflow.db"
    assert server[server.index("--artifacts-destination") + 1] == "/srv/wh/mlflow/artifacts"
    assert "--port" not in server  # the gateway chooses the private port
    assert not any(k.startswith(("AWS_", "MLFLOW_S3")) for k in env)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["werkhub-mlflow-gateway"]["services"] == ["mlflow"]
    assert set(roles["werkhub-mlflow-gateway"]["scopes"]) == {"read:users", "read:users:groups"}
    assert "tokens" in roles["werkhub-service"]["scopes"]
    werkhub_env = services(c)["werkhub"]["environment"]
    assert werkhub_env["WERKHUB_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:10102/services/mlflow"


def test_spawned_servers_get_their_mlflow_identity() -> None:
    env = build({"hub": {"base_url": "/wh/"}}).Spawner.environment
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:10102/wh/services/mlflow"
    assert env["WERKHUB_MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]
    token = env["MLFLOW_TRACKING_TOKEN"]
    assert token is spawner_token and callable(token)
    assert token(SimpleNamespace(api_token="server-token")) == "server-token"
    off = build({"services": {"mlflow": {"enabled": False}}}).Spawner.environment
    assert "MLFLOW_TRACKING_URI" not in off and "MLFLOW_TRACKING_TOKEN" not in off


def test_s3_artifact_store_reaches_only_the_mlflow_server() -> None:
    c = build(
        {
            "services": {
                "mlflow": {
                    "artifacts_destination": "s3://werkhub-artifacts/mlflow",
                    "s3_endpoint_url": "https://minio.werk.local:9000",
                    "s3_credentials_file": "/etc/werkhub/s3-credentials",
                    "s3_profile": "werkhub",
                    "internal_port": 10199,
                }
            }
        }
    )
    env = services(c)["mlflow"]["environment"]
    server = json.loads(env["WERKHUB_MLFLOW_SERVER"])
    assert server[server.index("--artifacts-destination") + 1] == "s3://werkhub-artifacts/mlflow"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://minio.werk.local:9000"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/werkhub/s3-credentials"
    assert env["AWS_PROFILE"] == "werkhub"
    assert env["WERKHUB_MLFLOW_INTERNAL_PORT"] == "10199"
    # clients never get storage credentials: MLflow serves the artifacts itself
    assert not any(k.startswith(("AWS_", "MLFLOW_S3")) for k in c.Spawner.environment)
    assert not any(k.startswith("AWS_") for k in services(c)["werkhub"]["environment"])


@pytest.mark.parametrize(
    ("mlflow", "message"),
    [
        ({"s3_endpoint_url": "https://minio:9000"}, "need artifacts_destination s3://"),
        ({"artifacts_destination": "relative/path"}, "absolute path, file:///PATH or s3://"),
        (
            {"artifacts_destination": "s3://b/p", "s3_endpoint_url": "minio:9000"},
            "http:// or https:// URL",
        ),
        ({"internal_port": 10102}, "already taken by services.mlflow.port"),
    ],
)
def test_bad_mlflow_options_are_refused(mlflow: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"services": {"mlflow": mlflow}})


def test_auth_config_denies_by_default_and_keeps_no_password() -> None:
    text = auth_ini("sqlite:////srv/wh/mlflow/auth.db")
    assert "default_permission = NO_PERMISSIONS" in text
    assert f"admin_username = {GATEWAY_ADMIN}" in text
    assert "password" not in text
    assert basic("alice", "pw") == "Basic YWxpY2U6cHc="
    assert refusal("POST", "/api/2.0/mlflow/users/update-password") == (403, HUB_ACCOUNTS)
