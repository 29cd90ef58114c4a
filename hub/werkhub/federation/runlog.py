"""MLflow of federation runs: one MLflow run per federation run in the creator's
experiment ``<creator>/federation-<name>`` (global metrics per round), one per party in its
party user's experiment of the same name (local metrics), and the final global model
registered as ``<creator>~federation-<name>`` and shared with every party's organisation
group. All through the gateway as the user concerned (:mod:`werkhub.federation.tracking`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from werkhub.federation import rules
from werkhub.federation.store import FederationStore
from werkhub.federation.tracking import Clients, log_model

log = logging.getLogger("werkhub.federation.runlog")
Share = Callable[[str, list[str]], Awaitable[None]]


class RunLog:
    def __init__(self, store: FederationStore, clients: Clients, share_model: Share | None) -> None:
        self.store = store
        self.clients = clients
        self.share_model = share_model

    async def open(self, fed: dict[str, Any], run: dict[str, Any]) -> None:
        name = rules.experiment_name(fed["name"])
        params = {
            "strategy": fed["strategy"],
            "rounds": run["rounds"],
            "parties": ",".join(run["parties"]),
            "min_parties": fed["min_parties"],
            "secure_aggregation": run["secure_aggregation"],
        }
        tags = {"werkhub.federation": str(fed["id"]), "werkhub.federation_run": str(run["id"])}
        found: dict[str, Any] = {"owner": fed["owner"], "parties": {}}
        try:
            owner = await self.clients.of(fed["owner"])
            exp = await owner.experiment(f"{fed['owner']}/{name}")
            run_id, artifacts = await owner.start_run(exp, f"run-{run['id']}", params, tags)
            found.update(experiment_id=exp, run_id=run_id, artifact_uri=artifacts)
            users = {p["org"]: p["user"] for p in fed["parties"]}
            for slug in run["parties"]:
                client = await self.clients.of(users[slug])
                pexp = await client.experiment(f"{users[slug]}/{name}")
                prun, _ = await client.start_run(
                    pexp, f"run-{run['id']}-{slug}", {**params, "party": slug}, tags
                )
                found["parties"][slug] = {
                    "user": users[slug],
                    "experiment_id": pexp,
                    "run_id": prun,
                }
        except Exception as exc:
            log.warning("MLflow runs of federation run %s not made: %s", run["id"], exc)
            found["error"] = str(exc)[:300]
        await asyncio.to_thread(self.store.update_run, run["id"], {"mlflow": found})
        run["mlflow"] = found

    async def log_global(self, run: dict[str, Any], found: rules.Round) -> None:
        info = run["mlflow"] or {}
        if not info.get("run_id"):
            return
        values = {**found.metrics, "parties": float(found.parties)}
        values.update(bytes_in=float(found.bytes_in), bytes_out=float(found.bytes_out))
        values["seconds"] = found.seconds
        if found.loss is not None:
            values["loss"] = found.loss
        owner = await self.clients.of(info.get("owner") or run["started_by"])
        with contextlib.suppress(Exception):
            await owner.log(info["run_id"], values, found.round)

    async def log_local(self, run: dict[str, Any], slug: str, item: rules.Local) -> None:
        party = ((run["mlflow"] or {}).get("parties") or {}).get(slug)
        if not party:
            return
        client = await self.clients.of(party["user"])
        values = {**item.metrics, "examples": float(item.examples)}
        with contextlib.suppress(Exception):
            await client.log(party["run_id"], values, item.round)

    async def close(
        self, run: dict[str, Any], status: str, metrics: dict[str, float] | None
    ) -> None:
        info = run.get("mlflow") or {}
        if not info.get("run_id"):
            return
        state = {"finished": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED")
        try:
            owner = await self.clients.of(info.get("owner") or run["started_by"])
            if metrics:
                await owner.log(info["run_id"], {f"final_{k}": v for k, v in metrics.items()}, 0)
            await owner.end(info["run_id"], state)
            for party in (info.get("parties") or {}).values():
                client = await self.clients.of(party["user"])
                await client.end(party["run_id"], state)
        except Exception as exc:
            log.warning("MLflow runs of federation run %s not closed: %s", run["id"], exc)

    async def register(
        self, fed: dict[str, Any], run: dict[str, Any], where: Path, final: rules.Final
    ) -> dict[str, Any]:
        """Register the final model in the owner's registry and share it with every
        party's organisation group (and the owner's)."""
        info = run["mlflow"]
        owner = await self.clients.of(fed["owner"])
        source = await log_model(owner, info["run_id"], info["artifact_uri"], where)
        name = rules.model_name(fed["owner"], fed["name"])
        version = await owner.register(name, source, info["run_id"])
        if self.share_model is not None:
            orgs = sorted({fed["owner_org"], *run["parties"]})
            try:
                await self.share_model(name, orgs)
            except Exception:
                # a version some parties cannot read is none: the run fails without it
                try:
                    await owner.withdraw(name, version)
                except Exception as exc:
                    log.error("model %s version %s left registered: %s", name, version, exc)
                raise
        return {"name": name, "version": version}
