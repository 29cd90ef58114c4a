"""Runs the federation's owner starts with their own ``flwr run`` (the configuration
``GET /federations/{fid}/flwr-config`` issues) become runs of the federation, as if
started from the page or the widget: bookings in each party's budget, the parties'
SuperNodes, the rounds, MLflow and the registered model
(:meth:`~werkhub.federation.supervisor.FederationSupervisor.adopt_run`).

Flower runs a run as soon as it is pushed, so werkhub looks for new ones itself: every
``adopt_seconds`` it checks whether each running SuperLink wrote its state database since
the last look (a file's size and time: no process), and only then lists Flower's runs
(``flwr list``). A run it has not seen and that is not over is taken up; the runs Flower
already kept when werkhub first looked at a federation (before a restart, say) are left
alone. While a federation has a run going, no other is taken up: one the owner starts
meanwhile is taken up once that run has ended, if Flower still runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from werkhub.federation.runtime import FederationRuntime, LinkPlan
from werkhub.federation.store import LIVE, FederationStore

log = logging.getLogger("werkhub.federation.adopt")


class Adopting(Protocol):
    """What the adopter needs of the supervisor (which owns it)."""

    store: FederationStore
    runtime: FederationRuntime
    submitting: set[int]

    def link_plan(self, fed: dict[str, Any]) -> LinkPlan: ...

    async def adopt_run(self, fed: dict[str, Any], flower_id: int) -> dict[str, Any] | None: ...


class RunAdopter:
    def __init__(self, supervisor: Adopting, interval: float) -> None:
        self.supervisor = supervisor
        self.interval = interval
        #: federation -> the SuperLink's state stamp at the last listing
        self._stamps: dict[int, tuple[int, ...]] = {}
        #: federation -> Flower run ids seen (taken up, werkhub's own, or left alone)
        self._seen: dict[int, set[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for runs started with flwr run failed; retrying")
            await asyncio.sleep(self.interval)

    async def look(self) -> list[int]:
        """One look at every open federation whose SuperLink runs: the ids of the runs
        taken up."""
        sup = self.supervisor
        taken: list[int] = []
        for fed in await asyncio.to_thread(sup.store.open_federations):
            fid = fed["id"]
            if fid in sup.submitting or not sup.runtime.link_running(fid):
                continue
            plan = sup.link_plan(fed)
            stamp = sup.runtime.state_stamp(plan)
            first = fid not in self._seen
            if not first and stamp == self._stamps.get(fid):
                continue
            runs = await asyncio.to_thread(sup.store.runs, fid)
            if not first and any(r["status"] in LIVE for r in runs):
                continue  # looked at again once that run has ended (the stamp moves on)
            listed = await sup.runtime.runs(plan)
            self._stamps[fid] = stamp
            seen = self._seen.setdefault(fid, set())
            seen.update(int(r["flower_run_id"]) for r in runs if r["flower_run_id"] is not None)
            for flower_id, status in listed:
                if flower_id in seen:
                    continue
                seen.add(flower_id)
                if first or status != "running":
                    continue  # there before werkhub looked, or over already
                adopted = await self._adopt(fed, flower_id)
                if adopted is not None:
                    taken.append(int(adopted["id"]))
                    break  # one run at a time: any other waits for the next look
        return taken

    async def _adopt(self, fed: dict[str, Any], flower_id: int) -> dict[str, Any] | None:
        fresh = await asyncio.to_thread(self.supervisor.store.get, fed["id"])
        return await self.supervisor.adopt_run(fresh, flower_id)
