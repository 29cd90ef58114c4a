"""Pure translation of a validated :class:`WerkhubConfig` into JupyterHub traits.

One function per area, each assigning whole values (never appending to or mutating
what is already in ``c``), so applying twice gives the same result. Spawner and
authenticator classes are named by string: loading the hub configuration imports
no Docker or Kubernetes client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkhub.config.paths import StatePaths
from werkhub.config.schema import OidcSection, WerkhubConfig
from werkhub.config.wiring import (  # re-exported: hub/helm/values.yaml and sites import them here
    CLI_SERVICE,
    MLFLOW_NAME,
    SERVER_KEEP_ALIVE,
    SERVICE_NAME,
    SOVEREIGN_ENV,
    SPAWNER_DIGEST_VAR,
    SPAWNER_SERVICE,
    endpoints_prefix,
    token_digest,
)
from werkhub.tracking.identity import TRACKING_URI_VAR, gateway_url, spawner_token

SPAWNER_CLASSES = {
    "local": "werkhub.spawners.local.WerkhubLocalSpawner",
    "docker": "werkhub.spawners.docker.WerkhubDockerSpawner",
    "kubernetes": "werkhub.spawners.kube.WerkhubKubeSpawner",
    "slurm": "werkhub.spawners.slurm.WerkhubSlurmSpawner",
}


@dataclass(frozen=True)
class Runtime:
    """Facts of this run that are not in the YAML file (decided by ``werkhub up``)."""

    state: StatePaths
    python: str
    cli_token: str = ""
    admin_token: str = ""
    spawner_token: str = ""
    admin_name: str = "admin"
    config_file: str = ""
    template_dir: str = field(default_factory=lambda: str(Path(__file__).parent / "templates"))
    #: Jupyter config for user servers: JupyterLab's news feed and update check off
    jupyter_config_dir: str = field(
        default_factory=lambda: str(Path(__file__).parent / "jupyter_config")
    )
    #: whether this machine can sandbox user code (``werkhub up`` probes it), and why not
    sandbox: bool = True
    sandbox_note: str = ""
    #: werkhub runs as root: unsandboxed user code still runs under each person's own uid
    as_root: bool = False
    #: the organisations the werkhub service knew at this start (``orgs.json`` in the state
    #: folder): each gets a hub role for its admins, filtered to its own members' group
    orgs: tuple[str, ...] = ()


def apply_config(cfg: WerkhubConfig, c: Any, rt: Runtime) -> None:
    apply_hub(cfg, c, rt)
    apply_auth(cfg, c, rt)
    apply_spawner(cfg, c, rt)
    apply_services(cfg, c, rt)


def apply_hub(cfg: WerkhubConfig, c: Any, rt: Runtime) -> None:
    hub = cfg.hub
    c.JupyterHub.bind_url = f"{hub.public_url}{hub.base_url}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{hub.hub_port}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub.proxy_api_port}"
    c.ConfigurableHTTPProxy.should_start = True
    c.ConfigurableHTTPProxy.command_umask = 0o077  # like every process of the state folder
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.JupyterHub.db_url = cfg.database.url or f"sqlite:///{rt.state.hub_db}"
    c.JupyterHub.cookie_secret_file = str(rt.state.cookie_secret)
    c.JupyterHub.pid_file = str(rt.state.root / "jupyterhub.pid")
    c.JupyterHub.concurrent_spawn_limit = hub.concurrent_spawn_limit
    c.JupyterHub.shutdown_on_logout = hub.shutdown_on_logout
    c.JupyterHub.template_paths = [rt.template_dir]
    c.JupyterHub.template_vars = {
        "werkhub_signup": signup_open(cfg, rt),
        "werkhub_single_team": single_team(cfg, rt),
    }
    # traitlets spells the warning level WARN
    c.JupyterHub.log_level = "WARN" if cfg.log_level == "WARNING" else cfg.log_level
    c.JupyterHub.trust_user_provided_tokens = False
    c.JupyterHub.api_tokens = {rt.admin_token: rt.admin_name} if rt.admin_token else {}


def apply_auth(cfg: WerkhubConfig, c: Any, rt: Runtime) -> None:
    auth = cfg.auth
    if auth.kind == "native":
        c.JupyterHub.authenticator_class = "werkhub.auth.native.WerkhubAuthenticator"
        c.WerkhubAuthenticator.store_path = str(rt.state.users_db)
        c.WerkhubAuthenticator.allow_signup = signup_open(cfg, rt)
        c.WerkhubAuthenticator.min_password_length = auth.native.min_password_length
        # sign-ups may ask to join one of these organisations (kept by the service)
        c.WerkhubAuthenticator.orgs_file = str(rt.state.orgs_file)
        c.Authenticator.admin_users = {rt.admin_name}
    else:
        assert auth.oidc is not None  # guaranteed by the schema
        apply_oidc(auth.oidc, c, cfg.hub.public_url + cfg.hub.base_url)


def apply_oidc(oidc: OidcSection, c: Any, public_base: str) -> None:
    """OpenID Connect through oauthenticator's GenericOAuthenticator (Keycloak by default)."""
    c.JupyterHub.authenticator_class = "werkhub.auth.oidc.WerkhubOIDCAuthenticator"
    g = c.GenericOAuthenticator
    g.login_service = oidc.display_name
    g.client_id = oidc.client_id
    if oidc.client_secret:
        g.client_secret = oidc.client_secret
    g.oauth_callback_url = f"{public_base}hub/oauth_callback"
    g.authorize_url = oidc.endpoint("authorize")
    g.token_url = oidc.endpoint("token")
    g.userdata_url = oidc.endpoint("userinfo")
    g.scope = list(oidc.scopes)
    g.username_claim = oidc.username_claim
    g.manage_groups = True
    g.auth_state_groups_key = f"oauth_user.{oidc.groups_claim}"
    g.admin_groups = set(oidc.admin_groups)
    g.allowed_groups = set(oidc.allowed_groups)
    g.allow_all = oidc.allow_all


def apply_spawner(cfg: WerkhubConfig, c: Any, rt: Runtime) -> None:
    sp = cfg.spawner
    c.JupyterHub.spawner_class = SPAWNER_CLASSES[sp.kind]
    c.Spawner.default_url = sp.default_url
    c.Spawner.start_timeout = sp.start_timeout
    c.Spawner.http_timeout = sp.http_timeout
    c.Spawner.ip = "127.0.0.1"
    environment: dict[str, Any] = {
        **SOVEREIGN_ENV,
        # where widgets and jobs inside a server reach the werkhub service
        "WERKHUB_SERVICE_URL": f"http://127.0.0.1:{cfg.services.werkhub.port}"
        f"{cfg.hub.base_url}services/{SERVICE_NAME}/",
    }
    if sp.kind in ("local", "slurm"):
        environment["JUPYTER_CONFIG_PATH"] = rt.jupyter_config_dir
    if cfg.services.mlflow.enabled:
        # MLflow identity: the gateway, and the server's own hub token (a callable: the
        # token exists only once the hub spawns the server)
        tracking_uri = gateway_url(cfg.services.mlflow.port, cfg.hub.base_url)
        environment[TRACKING_URI_VAR] = tracking_uri
        environment["MLFLOW_TRACKING_URI"] = tracking_uri
        environment["MLFLOW_TRACKING_TOKEN"] = spawner_token
    c.Spawner.environment = {**environment, **sp.environment}
    c.Spawner.server_token_scopes = [
        "users:activity!user",
        "access:servers!server",
        f"access:services!service={SERVICE_NAME}",
        f"access:services!service={MLFLOW_NAME}",
    ]
    c.Spawner.werkhub_url = (
        f"http://127.0.0.1:{cfg.services.werkhub.port}{cfg.hub.base_url}services/{SERVICE_NAME}"
    )
    c.Spawner.werkhub_token = rt.spawner_token
    if sp.mem_limit:
        c.Spawner.mem_limit = sp.mem_limit
    if sp.cpu_limit is not None:
        c.Spawner.cpu_limit = sp.cpu_limit
    if sp.images:
        c.Spawner.images = {name: e.description or e.image for name, e in sp.images.items()}
        c.Spawner.default_image = sp.default_image or next(iter(sp.images))
    if sp.kind == "docker":
        d = c.WerkhubDockerSpawner
        d.client_kwargs = {"base_url": sp.docker.url}
        d.network_name = sp.docker.network
        d.loopback_host_network = sp.docker.loopback_host_network
        d.image_refs = {name: e.image for name, e in sp.images.items()}
        d.image_limits = {
            name: {k: v for k, v in (("mem_limit", e.mem_limit), ("cpu_limit", e.cpu_limit)) if v}
            for name, e in sp.images.items()
        }
        d.shared_data_volumes = dict(sp.docker.shared_volumes)
        d.image = sp.images[sp.default_image or next(iter(sp.images))].image
    if sp.kind == "slurm":
        apply_slurm_spawner(cfg, c, rt)
    if sp.kind == "local":
        c.WerkhubLocalSpawner.home_dir_template = str(rt.state.homes / "{username}")
        c.WerkhubLocalSpawner.cmd = [rt.python, "-m", "jupyterhub.singleuser"]
        c.WerkhubLocalSpawner.sandbox = sandbox_settings(cfg, rt)


def apply_slurm_spawner(cfg: WerkhubConfig, c: Any, rt: Runtime) -> None:
    """Servers as Slurm jobs of each user's OS account (docs/slurm.md): the cluster, the
    user mapping, the partitions, and the Python the nodes run the server with."""
    slurm = cfg.slurm
    s = c.WerkhubSlurmSpawner
    s.slurm_conf = slurm.conf
    s.partition = slurm.partition
    s.cpu_partition = slurm.cpu_partition
    s.server_minutes = slurm.server_minutes
    s.poll_interval = slurm.poll_seconds
    s.user_mapping = slurm.user_mapping.model_dump()
    s.create_users = slurm.create_users
    # werkhub's GPU model (slurm.gpu_types renames) -> Slurm's gres type
    s.gpu_renames = {t.model: name for name, t in slurm.gpu_types.items() if t.model}
    s.python = slurm.python or rt.python
    s.command_timeout = slurm.command_timeout_seconds
    s.retry_seconds = slurm.retry_seconds


def apply_services(cfg: WerkhubConfig, c: Any, rt: Runtime) -> None:
    svc = cfg.services
    services: list[dict[str, Any]] = [
        {
            "name": SERVICE_NAME,
            "url": f"http://127.0.0.1:{svc.werkhub.port}",
            "command": [rt.python, "-m", "werkhub.service.app"],
            "environment": {
                **SOVEREIGN_ENV,
                "WERKHUB_STATE": str(rt.state.root),
                "WERKHUB_DB_URL": cfg.database.url or f"sqlite:///{rt.state.service_db}",
                "WERKHUB_TIME_ZONE": svc.werkhub.time_zone,
                "WERKHUB_SERVICE_PORT": str(svc.werkhub.port),
                "WERKHUB_CONFIG": rt.config_file,
                "WERKHUB_TICK_SECONDS": str(cfg.booking.tick_seconds),
                "WERKHUB_TEMPLATES": svc.werkhub.templates_dir,
                # local jobs run in the same sandbox as user servers ("" : none)
                "WERKHUB_SANDBOX_SETTINGS": json.dumps(isolation)
                if (isolation := sandbox_settings(cfg, rt))
                else "",
                # jobs log to MLflow through the gateway (werkhub.tracking.identity.client_env)
                TRACKING_URI_VAR: gateway_url(svc.mlflow.port, cfg.hub.base_url)
                if svc.mlflow.enabled
                else "",
            },
            "oauth_no_confirm": True,
            "display": True,
            "timeout": svc.start_timeout,
        }
    ]
    roles: list[dict[str, Any]] = [
        {
            "name": "user",
            "scopes": [
                "self",
                f"access:services!service={SERVICE_NAME}",
                f"access:services!service={MLFLOW_NAME}",
            ],
        },
        {
            "name": "werkhub-service",
            "description": "The werkhub service reads users and groups to answer who is who",
            "scopes": [
                "list:users",
                "read:users",
                "read:users:groups",
                "read:groups",
                # organisations are mirrored by hub groups the service keeps, and their
                # admins invite new members (accounts the service creates)
                "admin:groups",
                "admin:users",
                "read:servers",
                "servers",
                # jobs act as their owner: the service mints tokens for users
                "tokens",
            ],
            "services": [SERVICE_NAME],
        },
    ]
    if svc.mlflow.enabled:
        services.append(mlflow_service(cfg, rt))
        roles.append(mlflow_gateway_role())
    if rt.spawner_token:
        # the hub's spawners ask the werkhub service which GPUs a server gets; the service
        # recognises their token by its digest without asking the hub on every spawn
        services.append({"name": SPAWNER_SERVICE, "api_token": rt.spawner_token})
        werkhub = next(s for s in services if s["name"] == SERVICE_NAME)
        werkhub["environment"][SPAWNER_DIGEST_VAR] = token_digest(rt.spawner_token)
        roles.append(
            {
                "name": "werkhub-spawner",
                "description": "The hub's spawners asking the werkhub service for bookings",
                "scopes": [f"access:services!service={SERVICE_NAME}"],
                "services": [SPAWNER_SERVICE],
            }
        )
    if rt.cli_token:
        services.append({"name": CLI_SERVICE, "api_token": rt.cli_token})
        # granting admin rights to new users needs the admin role itself
        roles.append({"name": "admin", "services": [CLI_SERVICE]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles + org_admin_roles(rt.orgs)
    if cfg.serving.enabled:
        # model endpoints: the proxy sends /endpoints/ to the werkhub service's gateway
        c.Proxy.extra_routes = {
            endpoints_prefix(cfg.hub.base_url): f"http://127.0.0.1:{svc.werkhub.port}"
        }


def mlflow_service(cfg: WerkhubConfig, rt: Runtime) -> dict[str, Any]:
    """Service ``mlflow``: the werkhub gateway (hub login) in front of a private MLflow
    server with MLflow's basic-auth app (per-user experiment permissions)."""
    ml = cfg.services.mlflow
    prefix = f"{cfg.hub.base_url}services/{MLFLOW_NAME}"
    backend = ml.backend_store_uri or f"sqlite:///{rt.state.mlflow / 'mlflow.db'}"
    artifacts = ml.artifacts_destination or str(rt.state.mlflow / "artifacts")
    # the gateway adds --port and --allowed-hosts (it may pick a free port at start)
    server = [
        rt.python,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--workers",
        str(ml.workers),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--static-prefix",
        prefix,
        # the hub logs requests already; the gateway's pool ends an idle connection after
        # 5 s, and MLflow must not end it first (uvicorn's default is also 5 s: a race that
        # fails the gateway's request on a connection MLflow is closing)
        f"--uvicorn-opts=--no-access-log --timeout-keep-alive {SERVER_KEEP_ALIVE}",
    ]
    environment = {
        **SOVEREIGN_ENV,
        # the server's background job runner (a pool of huey workers) serves GenAI
        # features werkhub does not use; on a small machine it costs 7 processes
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "WERKHUB_STATE": str(rt.state.root),
        "WERKHUB_MLFLOW_SERVER": json.dumps(server),
        "WERKHUB_MLFLOW_INTERNAL_PORT": str(ml.internal_port),
        "WERKHUB_MLFLOW_AUTH_DB": f"sqlite:///{rt.state.mlflow / 'auth.db'}",
    }
    if ml.s3_endpoint_url:
        environment["MLFLOW_S3_ENDPOINT_URL"] = ml.s3_endpoint_url
    if ml.s3_credentials_file:
        environment["AWS_SHARED_CREDENTIALS_FILE"] = ml.s3_credentials_file
    if ml.s3_profile:
        environment["AWS_PROFILE"] = ml.s3_profile
    return {
        "name": MLFLOW_NAME,
        "url": f"http://127.0.0.1:{ml.port}",
        "command": [rt.python, "-m", "werkhub.tracking.gateway"],
        "environment": environment,
        "oauth_no_confirm": True,
        "display": True,
        "timeout": cfg.services.start_timeout,
    }


def mlflow_gateway_role() -> dict[str, Any]:
    """What the gateway may ask the hub: who a caller is (admin flag, groups)."""
    return {
        "name": "werkhub-mlflow-gateway",
        "description": "The MLflow gateway looks up callers' admin flag and groups",
        "scopes": ["read:users", "read:users:groups"],
        "services": [MLFLOW_NAME],
    }


def sandboxed(cfg: WerkhubConfig, rt: Runtime) -> bool:
    """Whether user servers and local jobs run in bubblewrap sandboxes."""
    return cfg.spawner.kind == "local" and cfg.spawner.sandbox.mode != "off" and rt.sandbox


def single_team(cfg: WerkhubConfig, rt: Runtime) -> str:
    """Why this install is for one trusted team only ("" when users are isolated)."""
    if cfg.spawner.kind != "local" or sandboxed(cfg, rt):
        return ""
    why = (
        "spawner.sandbox is off"
        if cfg.spawner.sandbox.mode == "off"
        else rt.sandbox_note or "this machine cannot sandbox user code"
    )
    if rt.as_root:
        return (
            f"{why}: user code runs under each person's own uid but not sandboxed (other "
            "users' processes are visible, GPU devices are not narrowed to the booking)"
        )
    return f"{why}: user code runs unisolated as werkhub's own OS user"


def signup_open(cfg: WerkhubConfig, rt: Runtime) -> bool:
    """Self sign-up: only where strangers' code is isolated from each other."""
    native = cfg.auth.kind == "native" and cfg.auth.native.allow_signup
    return native and not single_team(cfg, rt)


def sandbox_settings(cfg: WerkhubConfig, rt: Runtime) -> dict[str, Any]:
    """What each sandbox needs (JSON-able; :mod:`werkhub.sandbox.prepare`): bubblewrap
    where the machine sandboxes; each person's own uid where it cannot but werkhub runs as
    root (user code never runs as root); empty otherwise (it runs as werkhub's own user)."""
    if sandboxed(cfg, rt):
        isolation = "bubblewrap"
    elif cfg.spawner.kind == "local" and rt.as_root:
        isolation = "uid"
    else:
        return {}
    sp = cfg.spawner
    box = sp.sandbox
    hidden = [rt.config_file] if rt.config_file else []
    if cfg.jobs.reports_dir.startswith("/"):  # a relative one lies in the state folder
        hidden.append(cfg.jobs.reports_dir)
    return {
        "isolation": isolation,
        "state_root": str(rt.state.root),
        "hidden": hidden,
        "uid_base": box.uid_base,
        "uid_count": box.uid_count,
        "device_dir": box.device_dir,
        "max_processes": box.max_processes,
        "read_only": list(box.read_only),
        "mem_limit": sp.mem_limit,
        "cpu_limit": sp.cpu_limit,
    }


#: what an organisation's admins may do in the hub itself, only to its members' group
ORG_ADMIN_SCOPES = (
    "read:users",
    "admin:users",
    "read:servers",
    "admin:servers",
    "users:activity",
    "read:groups",
    "access:servers",
)


def org_admin_roles(slugs: Iterable[str]) -> list[dict[str, Any]]:
    """One hub role per organisation for the group of its admins (``org-<slug>-admins``),
    its scopes filtered to the group of its members (``org-<slug>``)."""
    return [
        {
            "name": f"org-admin-{slug}",
            "description": f"Admins of organisation {slug}: its members only",
            "scopes": [f"{scope}!group=org-{slug}" for scope in ORG_ADMIN_SCOPES],
            "groups": [f"org-{slug}-admins"],
        }
        for slug in sorted(set(slugs))
    ]
