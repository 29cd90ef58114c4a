"""MLflow's own user and permission API, spoken as the gateway's MLflow administrator.

Hub users become MLflow users (passwords derived from the gateway key), hub admins
MLflow admins, hub groups MLflow roles (``hub-group:NAME``). Sharing an experiment (by
id) or a registered model (by name) with a group adds a permission to the group's role
(resource types ``experiment`` and ``registered_model``); MLflow then enforces it on
every request. MLflow moves and deletes only its own per-user grants with a renamed or
deleted model, so the gateway moves and deletes the groups' ones
(:meth:`MlflowAdmin.move_shares`, :meth:`MlflowAdmin.drop_shares`).
Used by the gateway (accounts, role membership) and the werkhub service (sharing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx

from werkhub import http
from werkhub.errors import Upstream
from werkhub.tracking.identity import (
    GATEWAY_ADMIN,
    WORKSPACE,
    GatewaySecrets,
    group_of_role,
    role_name,
)

#: MLflow's resource types of the shares werkhub manages
EXPERIMENT = "experiment"
REGISTERED_MODEL = "registered_model"


class MlflowAdminError(Upstream, RuntimeError):
    """MLflow refused an administrative call (status and MLflow's message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"MLflow answered {status} {code}: {message[:200]}")
        self.status = status
        self.code = code


class MlflowAdmin:
    """Async client for MLflow's auth API at ``base`` (the private server, with prefix)."""

    def __init__(self, base: str, keys: GatewaySecrets, timeout: float = 30) -> None:
        self.base = base.rstrip("/")
        self.keys = keys
        # the private server is plain HTTP on loopback: no TLS context to build per client
        self._client = http.async_client(
            auth=(GATEWAY_ADMIN, keys.admin_password),
            timeout=timeout,
            verify=not self.base.startswith("http://"),
        )
        self._role_ids: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self, method: str, path: str, ok: Iterable[str] = (), **kwargs: Any
    ) -> dict[str, Any] | None:
        """One call; error codes in ``ok`` (e.g. RESOURCE_ALREADY_EXISTS) answer None."""
        reply = await self._client.request(method, f"{self.base}{path}", **kwargs)
        if reply.status_code == 200:
            return reply.json() if reply.content else {}
        try:
            body = reply.json()
        except ValueError:
            body = {"error_code": "", "message": reply.text}
        code = str(body.get("error_code", ""))
        if code in ok:
            return None
        # never pass MLflow's raw message on: it can quote SQL parameters (password hashes)
        raise MlflowAdminError(reply.status_code, code, str(body.get("message", ""))[:80])

    async def healthy(self) -> bool:
        try:
            reply = await self._client.get(f"{self.base}/health")
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    # -- users -----------------------------------------------------------------------

    async def ensure_user(self, name: str, admin: bool) -> None:
        """Create ``name`` (or reset its password to the derived one) and set its admin flag."""
        password = self.keys.user_password(name)
        created = await self._call(
            "POST",
            "/api/2.0/mlflow/users/create",
            ok=("RESOURCE_ALREADY_EXISTS",),
            json={"username": name, "password": password},
        )
        if created is None:
            await self._call(
                "PATCH",
                "/api/2.0/mlflow/users/update-password",
                json={"username": name, "password": password},
            )
        await self.set_admin(name, admin)

    async def set_admin(self, name: str, admin: bool) -> None:
        await self._call(
            "PATCH",
            "/api/2.0/mlflow/users/update-admin",
            json={"username": name, "is_admin": admin},
        )

    async def user_exists(self, name: str) -> bool:
        found = await self._call(
            "GET",
            "/api/2.0/mlflow/users/get",
            ok=("RESOURCE_DOES_NOT_EXIST",),
            params={"username": name},
        )
        return found is not None

    async def sync_groups(self, name: str, groups: Iterable[str]) -> None:
        """Make ``name``'s ``hub-group:`` roles exactly its hub groups (other roles untouched)."""
        wanted = set(groups)
        reply = await self._call(
            "GET", "/api/3.0/mlflow/users/roles/list", params={"username": name}
        )
        have = {
            group: int(role["id"])
            for role in (reply or {}).get("roles", [])
            if (group := group_of_role(role["name"])) is not None
        }
        for group in sorted(wanted - have.keys()):
            await self.assign(name, await self.role_id(group))
        for group in sorted(have.keys() - wanted):
            await self._call(
                "DELETE",
                "/api/3.0/mlflow/roles/unassign",
                ok=("RESOURCE_DOES_NOT_EXIST",),
                json={"username": name, "role_id": have[group]},
            )

    async def assign(self, name: str, role_id: int) -> None:
        await self._call(
            "POST",
            "/api/3.0/mlflow/roles/assign",
            ok=("RESOURCE_ALREADY_EXISTS",),
            json={"username": name, "role_id": role_id},
        )

    # -- roles (hub groups) -------------------------------------------------------------

    async def role_id(self, group: str, create: bool = True) -> int:
        """The id of the group's role, created on first use."""
        name = role_name(group)
        if name in self._role_ids:
            return self._role_ids[name]
        async with self._lock:
            for attempt in range(2):
                reply = await self._call(
                    "GET", "/api/3.0/mlflow/roles/list", params={"workspace": WORKSPACE}
                )
                for role in (reply or {}).get("roles", []):
                    self._role_ids[role["name"]] = int(role["id"])
                if name in self._role_ids or not create or attempt:
                    break
                await self._call(
                    "POST",
                    "/api/3.0/mlflow/roles/create",
                    ok=("RESOURCE_ALREADY_EXISTS",),
                    json={
                        "name": name,
                        "workspace": WORKSPACE,
                        "description": f"members of the hub group {group}",
                    },
                )
        if name not in self._role_ids:
            raise KeyError(group)
        return self._role_ids[name]

    # -- experiments and shares ------------------------------------------------------------

    async def experiment(self, experiment_id: str) -> dict[str, Any] | None:
        reply = await self._call(
            "GET",
            "/api/2.0/mlflow/experiments/get",
            ok=("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"),
            params={"experiment_id": experiment_id},
        )
        return None if reply is None else reply.get("experiment")

    async def registered_model(self, name: str) -> dict[str, Any] | None:
        reply = await self._call(
            "GET",
            "/api/2.0/mlflow/registered-models/get",
            ok=("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"),
            params={"name": name},
        )
        return None if reply is None else reply.get("registered_model")

    async def model_version(
        self, name: str, version: str | None = None, alias: str | None = None
    ) -> dict[str, Any] | None:
        """A registered model's version, by number or by alias (None: no such version)."""
        if alias is not None:
            path, params = "/api/2.0/mlflow/registered-models/alias", {"name": name, "alias": alias}
        else:
            path, params = "/api/2.0/mlflow/model-versions/get", {"name": name, "version": version}
        reply = await self._call(
            "GET", path, ok=("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"), params=params
        )
        return None if reply is None else reply.get("model_version")

    async def permission(self, user: str, resource_id: str, resource_type: str = EXPERIMENT) -> str:
        """MLflow's effective permission of ``user`` on the experiment (or other
        resource: ``registered_model`` by name) (NO_PERMISSIONS, READ, ..., MANAGE)."""
        if not await self.user_exists(user):
            return "NO_PERMISSIONS"
        reply = await self._call(
            "GET",
            "/api/3.0/mlflow/users/permissions/get",
            params={"username": user, "resource_type": resource_type, "resource_id": resource_id},
        )
        return str((reply or {}).get("permission", "NO_PERMISSIONS"))

    async def shares(self, key: str, resource_type: str = EXPERIMENT) -> dict[str, str]:
        """{group: permission} of the experiment's (or registered model's) shares."""
        grants = await self._group_grants(resource_type, key)
        return {group: perm["permission"] for group, perm in grants}

    async def _share_entry(
        self, role_id: int, experiment_id: str, resource_type: str = EXPERIMENT
    ) -> dict[str, Any] | None:
        reply = await self._call(
            "GET", "/api/3.0/mlflow/roles/permissions/list", params={"role_id": role_id}
        )
        for perm in (reply or {}).get("role_permissions", []):
            if perm["resource_type"] == resource_type and perm["resource_pattern"] == experiment_id:
                return perm
        return None

    async def _group_grants(self, resource_type: str, key: str) -> list[tuple[str, dict[str, Any]]]:
        """Every hub group's role permission on the resource, with the group (one call)."""
        reply = await self._call(
            "GET", "/api/3.0/mlflow/roles/list", params={"workspace": WORKSPACE}
        )
        found = []
        for role in (reply or {}).get("roles", []):
            group = group_of_role(role["name"])
            if group is None:
                continue
            found += [
                (group, perm)
                for perm in role.get("permissions", [])
                if perm["resource_type"] == resource_type and perm["resource_pattern"] == key
            ]
        return found

    async def share(
        self,
        experiment_id: str,
        group: str,
        permission: str,
        members: Iterable[str],
        resource_type: str = EXPERIMENT,
    ) -> None:
        """Grant the group's role ``permission`` on the experiment (or registered model);
        enrol current members now (the gateway enrols anyone else on their next
        request)."""
        role = await self.role_id(group)
        entry = await self._share_entry(role, experiment_id, resource_type)
        if entry is None:
            await self._call(
                "POST",
                "/api/3.0/mlflow/roles/permissions/add",
                json={
                    "role_id": role,
                    "resource_type": resource_type,
                    "resource_pattern": experiment_id,
                    "permission": permission,
                },
            )
        elif entry["permission"] != permission:
            await self._call(
                "PATCH",
                "/api/3.0/mlflow/roles/permissions/update",
                json={"role_permission_id": entry["id"], "permission": permission},
            )
        for member in members:
            if await self.user_exists(member):
                await self.assign(member, role)

    async def unshare(
        self, experiment_id: str, group: str, resource_type: str = EXPERIMENT
    ) -> bool:
        """Remove the group's permission on the experiment (or registered model); False if
        there was none."""
        try:
            role = await self.role_id(group, create=False)
        except KeyError:
            return False
        entry = await self._share_entry(role, experiment_id, resource_type)
        if entry is None:
            return False
        await self._call(
            "DELETE",
            "/api/3.0/mlflow/roles/permissions/remove",
            json={"role_permission_id": entry["id"]},
        )
        return True

    async def move_shares(self, old: str, new: str, resource_type: str = REGISTERED_MODEL) -> int:
        """After a rename: the groups' shares of ``old`` now name ``new`` (MLflow moves
        only the per-user grants itself). How many moved."""
        grants = await self._group_grants(resource_type, old)
        for _, perm in grants:  # the new share first: a failure in between loses none
            await self._call(
                "POST",
                "/api/3.0/mlflow/roles/permissions/add",
                ok=("RESOURCE_ALREADY_EXISTS",),
                json={
                    "role_id": perm["role_id"],
                    "resource_type": resource_type,
                    "resource_pattern": new,
                    "permission": perm["permission"],
                },
            )
            await self._call(
                "DELETE",
                "/api/3.0/mlflow/roles/permissions/remove",
                ok=("RESOURCE_DOES_NOT_EXIST",),
                json={"role_permission_id": perm["id"]},
            )
        return len(grants)

    async def drop_shares(self, key: str, resource_type: str = REGISTERED_MODEL) -> int:
        """After a delete (or before a name is used afresh): no group keeps a share of
        ``key``, so a later model of the same name starts unshared. How many dropped."""
        grants = await self._group_grants(resource_type, key)
        for _, perm in grants:
            await self._call(
                "DELETE",
                "/api/3.0/mlflow/roles/permissions/remove",
                ok=("RESOURCE_DOES_NOT_EXIST",),
                json={"role_permission_id": perm["id"]},
            )
        return len(grants)

    # -- deleted hub users (werkhub.service.users) ------------------------------------------

    async def delete_user(self, name: str) -> bool:
        """Remove ``name``'s MLflow account and its permissions; runs and experiments stay
        (admins still see them). False if there was no such account."""
        if name == GATEWAY_ADMIN:
            raise ValueError("the gateway's own MLflow administrator is never deleted")
        done = await self._call(
            "DELETE",
            "/api/2.0/mlflow/users/delete",
            ok=("RESOURCE_DOES_NOT_EXIST",),
            json={"username": name},
        )
        return done is not None
