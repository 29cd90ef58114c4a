"""Builds the federations' supervisor for the werkhub service: the store on the service's
database, Flower's runtime (from its own virtual environment), MLflow through the gateway
as each user, and the sharing of final models with the parties' organisation groups."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from werkhub.config.env import ServiceEnv
from werkhub.errors import Misconfigured
from werkhub.federation.store import FederationStore
from werkhub.federation.tracking import Clients
from werkhub.orgs.rules import members_group
from werkhub.orgs.store import OrgStore
from werkhub.tracking.accounts import REGISTERED_MODEL, MlflowAdmin
from werkhub.tracking.identity import TRACKING_URI_VAR, GatewaySecrets

log = logging.getLogger("werkhub.federation.setup")
ROOT = Path(__file__).resolve().parents[3]
TOKEN_SECONDS = 7 * 24 * 3600


def flower_bin(cfg: Any) -> Path:
    configured = cfg.federation.flower_bin
    return Path(configured) if configured else ROOT / ".venv-flower" / "bin"


def build(
    cfg: Any,
    env: ServiceEnv,
    bookings: Any,
    auth: Any,
    orgs: OrgStore,
    templates: Path,
) -> Any:
    """The :class:`~werkhub.federation.supervisor.FederationSupervisor`, or None where
    Flower's runtime is missing (the API then answers 503 to what needs it, and
    everything else works)."""
    try:
        from werkhub.federation.runtime import FederationRuntime, RuntimeOptions
        from werkhub.federation.supervisor import FederationSupervisor, Options
    except ImportError as exc:
        log.warning("federations cannot run here: %s", exc)
        return None
    binaries = flower_bin(cfg)
    if not (binaries / "flower-superlink").exists():
        log.warning("federations cannot run here: no %s/flower-superlink", binaries)
        return None
    from werkhub.sandbox.prepare import settings_from_env

    try:
        runtime = FederationRuntime(
            env.state.root, settings_from_env(), binaries, RuntimeOptions.of(cfg.federation)
        )
    except Misconfigured as exc:
        log.warning("federations cannot run here: %s", exc)
        return None
    store = FederationStore(bookings.writer, bookings.reader)

    async def groups_of(user: str) -> list[str]:
        details = await auth.user_details(user)
        return list((details or {}).get("groups") or [])

    clients = None
    gateway = os.environ.get(TRACKING_URI_VAR, "")
    if gateway:

        async def mint(user: str) -> str:
            return str(
                await auth.mint_token(
                    user,
                    note="werkhub federation",
                    expires_in=TOKEN_SECONDS,
                    scopes=["access:services!service=mlflow"],
                )
            )

        clients = Clients(gateway, mint)

    async def share_model(name: str, slugs: list[str]) -> None:
        """READ on model ``name`` for each organisation's members group: the federation
        is the rule that lets the model cross organisations."""
        address = json.loads((env.state.mlflow / "internal.json").read_text())
        admin = MlflowAdmin(
            address["url"] + address["prefix"], GatewaySecrets.load(env.state.secrets)
        )
        try:
            for slug in slugs:
                members = sorted(orgs.org_members_of(slug))
                await admin.share(name, members_group(slug), "READ", members, REGISTERED_MODEL)
        finally:
            await admin.aclose()

    options = Options(
        state=env.state.root,
        homes=env.state.homes,
        templates=templates,
        spawner_kind=cfg.spawner.kind,
    )
    return FederationSupervisor(
        store,
        runtime,
        options,
        bookings=bookings,
        mlflow=clients,
        share_model=share_model,
        groups_of=groups_of,
    )
