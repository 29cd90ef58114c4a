from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from traitlets.config import Config

from werkhub.app.configurer import Runtime, apply_config
from werkhub.app.plugins import PluginError, apply_plugins
from werkhub.config.load import ConfigError, parse_config
from werkhub.config.paths import StatePaths


def build(data: dict | None = None, **rt: str) -> Config:
    c = Config()
    runtime = Runtime(state=StatePaths.at("/srv/wh"), python="/venv/bin/python", **rt)
    apply_config(parse_config(data), c, runtime)
    return c


def test_embedded_default() -> None:
    c = build()
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000/"
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:8081"
    assert c.JupyterHub.db_url == "sqlite:////srv/wh/jupyterhub.sqlite"
    assert c.JupyterHub.spawner_class == "werkhub.spawners.local.WerkhubLocalSpawner"
    assert c.WerkhubLocalSpawner.home_dir_template == "/srv/wh/homes/{username}"
    assert c.JupyterHub.authenticator_class == "werkhub.auth.native.WerkhubAuthenticator"
    assert c.WerkhubAuthenticator.store_path == "/srv/wh/users.sqlite"
    assert c.Authenticator.admin_users == {"admin"}
    assert c.JupyterHub.api_tokens == {}
    assert c.ConfigurableHTTPProxy.command_umask == 0o077
    assert c.Spawner.environment["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "access:services!service=werkhub" in c.Spawner.server_token_scopes


def test_services_and_roles() -> None:
    c = build(cli_token="cli", admin_token="x" * 32)
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["werkhub"]["url"] == "http://127.0.0.1:10101"
    assert services["werkhub"]["command"] == ["/venv/bin/python", "-m", "werkhub.service.app"]
    mlflow = services["mlflow"]
    assert mlflow["url"] == "http://127.0.0.1:10102"
    assert mlflow["command"] == ["/venv/bin/python", "-m", "werkhub.tracking.gateway"]
    cmd = json.loads(mlflow["environment"]["WERKHUB_MLFLOW_SERVER"])
    assert cmd[cmd.index("--static-prefix") + 1] == "/services/mlflow"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////srv/wh/mlflow/mlflow.db"
    assert mlflow["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert services["werkhub-cli"]["api_token"] == "cli"
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert "access:services!service=werkhub" in roles["user"]["scopes"]
    assert roles["admin"]["services"] == ["werkhub-cli"]
    assert c.JupyterHub.api_tokens == {"x" * 32: "admin"}


def test_service_knows_the_spawner_token_by_its_digest_only() -> None:
    c = build(spawner_token="s" * 64)
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["werkhub-spawner"]["api_token"] == "s" * 64
    env = services["werkhub"]["environment"]
    assert env["WERKHUB_SPAWNER_TOKEN_SHA256"] == hashlib.sha256(b"s" * 64).hexdigest()
    assert "s" * 64 not in json.dumps(env)
    assert c.Spawner.werkhub_token == "s" * 64


def test_mlflow_can_be_disabled_and_config_is_idempotent() -> None:
    data = {"services": {"mlflow": {"enabled": False}}}
    c = build(data)
    assert [s["name"] for s in c.JupyterHub.services] == ["werkhub"]
    runtime = Runtime(state=StatePaths.at("/srv/wh"), python="/p")
    apply_config(parse_config(data), c, runtime)
    assert [s["name"] for s in c.JupyterHub.services] == ["werkhub"]


def test_log_level_is_accepted_by_jupyterhub() -> None:
    from jupyterhub.app import JupyterHub

    for level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        JupyterHub(config=build({"log_level": level}))  # raises on a level it rejects


def test_spawner_kinds_are_named_by_string() -> None:
    images = {"base": {"image": "localhost/werkhub-base:1", "mem_limit": "2G"}}
    docker = build(
        {
            "spawner": {
                "kind": "docker",
                "images": images,
                "docker": {"url": "unix:///run/podman.sock"},
            }
        }
    )
    assert docker.JupyterHub.spawner_class.endswith("WerkhubDockerSpawner")
    assert docker.WerkhubDockerSpawner.image_refs == {"base": "localhost/werkhub-base:1"}
    assert docker.WerkhubDockerSpawner.image_limits == {"base": {"mem_limit": "2G"}}
    assert docker.WerkhubDockerSpawner.client_kwargs == {"base_url": "unix:///run/podman.sock"}
    assert docker.Spawner.images == {"base": "localhost/werkhub-base:1"}
    c = build(
        {"spawner": {"kind": "kubernetes", "mem_limit": "4G", "cpu_limit": 2, "images": images}}
    )
    assert c.JupyterHub.spawner_class.endswith("WerkhubKubeSpawner")
    assert c.Spawner.mem_limit == "4G" and c.Spawner.cpu_limit == 2


KEYCLOAK = {
    "kind": "oidc",
    "oidc": {
        "issuer": "https://sso.example.de/realms/werk",
        "client_id": "werkhub",
        "client_secret": "s3cret",
        "admin_groups": ["werkhub-admins"],
        "allowed_groups": ["engineers", "students"],
    },
}


def test_oidc_keycloak_mapping() -> None:
    c = build({"auth": KEYCLOAK, "hub": {"public_url": "https://hub.example.de"}})
    g = c.GenericOAuthenticator
    assert c.JupyterHub.authenticator_class == "werkhub.auth.oidc.WerkhubOIDCAuthenticator"
    base = "https://sso.example.de/realms/werk/protocol/openid-connect"
    assert g.authorize_url == f"{base}/auth"
    assert g.token_url == f"{base}/token"
    assert g.userdata_url == f"{base}/userinfo"
    assert g.oauth_callback_url == "https://hub.example.de/hub/oauth_callback"
    assert g.client_id == "werkhub" and g.client_secret == "s3cret"
    assert g.scope == ["openid", "profile", "email"]
    assert g.username_claim == "preferred_username"
    assert g.manage_groups is True
    assert g.auth_state_groups_key == "oauth_user.groups"
    assert g.admin_groups == {"werkhub-admins"}
    assert g.allowed_groups == {"engineers", "students"}
    assert g.allow_all is False
    assert g.login_service == "Keycloak"


def test_oidc_generic_endpoints_and_secret_from_env() -> None:
    oidc = {
        "provider": "generic",
        "display_name": "Werk SSO",
        "authorize_url": "https://idp/authorize",
        "token_url": "https://idp/token",
        "userinfo_url": "https://idp/userinfo",
        "client_id": "wh",
        "allow_all": True,
    }
    c = build({"auth": {"kind": "oidc", "oidc": oidc}})
    g = c.GenericOAuthenticator
    assert (g.authorize_url, g.token_url, g.userdata_url) == (
        "https://idp/authorize",
        "https://idp/token",
        "https://idp/userinfo",
    )
    assert "client_secret" not in g  # read by oauthenticator from OAUTH_CLIENT_SECRET
    assert g.allow_all is True


def test_oidc_config_loads_into_real_authenticator() -> None:
    from oauthenticator.generic import GenericOAuthenticator

    c = build({"auth": KEYCLOAK})
    auth = GenericOAuthenticator(config=c)
    assert auth.token_url.endswith("/protocol/openid-connect/token")
    assert auth.allowed_groups == {"engineers", "students"}
    assert auth.manage_groups


def plugin_sets_title(cfg: object, c: Config) -> None:
    c.JupyterHub.template_vars = {"title": "Werk 3"}


def test_plugins_run_after_werkhub_and_bad_plugins_are_named() -> None:
    c = build()
    cfg = parse_config({"plugins": [f"{__name__}:plugin_sets_title"]})
    assert apply_plugins(cfg, c)[-1].endswith("plugin_sets_title")
    assert c.JupyterHub.template_vars == {"title": "Werk 3"}
    with pytest.raises(PluginError, match="cannot import"):
        apply_plugins(parse_config({"plugins": ["no_such_module_xyz"]}), c)
    with pytest.raises(PluginError, match="no callable"):
        apply_plugins(parse_config({"plugins": [f"{__name__}:nothing"]}), c)


def test_hub_config_file_is_thin() -> None:
    text = (Path(__file__).resolve().parents[2] / "hub" / "jupyterhub_config.py").read_text()
    assert len(text.splitlines()) <= 45


def test_organisation_admin_roles_are_filtered_to_their_members() -> None:
    from werkhub.app.configurer import org_admin_roles

    (role,) = org_admin_roles(["acme", "acme"])
    assert role["name"] == "org-admin-acme" and role["groups"] == ["org-acme-admins"]
    assert role["scopes"] and all(s.endswith("!group=org-acme") for s in role["scopes"])
    assert "admin:users!group=org-acme" in role["scopes"]


def test_the_hub_waits_for_its_services_as_long_as_configured() -> None:
    """JupyterHub gives a managed service 30 s to answer and then exits; werkhub gives
    both of its services ``services.start_timeout`` (MLflow can take longer on a busy
    machine), and the value is one JupyterHub's Service accepts."""
    from jupyterhub.services.service import Service

    for data, expected in (({}, 180), ({"services": {"start_timeout": 600}}, 600)):
        services = {s["name"]: s for s in build(data).JupyterHub.services}
        assert services["werkhub"]["timeout"] == services["mlflow"]["timeout"] == expected
        assert Service(**services["werkhub"]).timeout == expected
    with pytest.raises(ConfigError, match=r"services.start_timeout: .* greater than or equal to 5"):
        parse_config({"services": {"start_timeout": 1}})
