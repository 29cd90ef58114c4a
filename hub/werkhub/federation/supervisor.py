"""The service side of federations: it drives the Flower runtime
(:class:`werkhub.federation.runtime.FederationRuntime`) from what the database says.

* On start it brings up (or adopts) the SuperLink of every open federation that has
  parties, and goes on watching the runs the database says are live.
* It registers a party's SuperNode key when its organisation accepts and unregisters it
  when the party leaves or is revoked.
* A run: each party that asked for GPUs gets a booking in its own organisation's budget
  (a refusal stops the start and names the party), the SuperNodes start in the parties'
  sandboxes, the app is submitted, and a watcher reads the files the app writes
  (``rounds.jsonl``, ``final.json``, ``error.json``, each party's ``local.jsonl``),
  records the rounds, logs to MLflow, registers the final model, releases the bookings and
  ends the run with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError
from werkhub.booking.settings import Caller
from werkhub.errors import Conflict, Invalid, Unavailable, WerkhubError
from werkhub.federation import rules
from werkhub.federation.adopt import RunAdopter
from werkhub.federation.appfiles import app_settings, read_new, read_small
from werkhub.federation.runlog import RunLog, Share
from werkhub.federation.runtime import FederationRuntime, LinkPlan, PartyPlan
from werkhub.federation.store import LIVE, FederationStore
from werkhub.federation.tracking import Clients

log = logging.getLogger("werkhub.federation.supervisor")
#: bookings of a run last this long (released at the run's end), and are extended by as
#: much while the run goes on once they end within EXTEND_BEFORE
BOOKING_MINUTES = 240
EXTEND_BEFORE = timedelta(minutes=30)
#: how often a run's bookings are looked at for extension (seconds)
EXTEND_CHECK_SECONDS = 60.0
#: how often a going run's state is asked of Flower (a flwr process each time); the files
#: the app writes are read at every look
STATUS_SECONDS = 5.0
#: the ledger's actor for a federation's bookings
ACTOR = "werkhub-federation"
#: the message of a run werkhub's restart cut
RESTARTED = "werkhub restarted while this run went on; start it again"


@dataclass
class Options:
    state: Path  # <state>: federations live in <state>/federations/<fid>
    homes: Path  # users' homes: <homes>/<user>
    templates: Path  # built-in apps: <templates>/<slug>[/app]
    poll_seconds: float = 1.0
    #: how often Flower's state is looked at for runs the owner started with flwr run
    adopt_seconds: float = 2.0
    #: spawner.kind: where a user's own server has its home (the issued flwr files)
    spawner_kind: str = "local"


def run_row(
    fed: dict[str, Any], rounds: int, by: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The accepted parties of a federation, and a new run's row with them."""
    parties = [p for p in fed["parties"] if p["state"] == "accepted"]
    row = {
        "rounds": rounds,
        "secure_aggregation": rules.secure_aggregation(fed["secure_aggregation"], len(parties)),
        "parties": [p["org"] for p in parties],
        "started_by": by,
    }
    return parties, row


class FederationSupervisor:
    def __init__(
        self,
        store: FederationStore,
        runtime: FederationRuntime,
        options: Options,
        bookings: Any = None,
        mlflow: Clients | None = None,
        share_model: Share | None = None,
        groups_of: Callable[[str], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.options = options
        self.bookings = bookings
        self.mlflow = mlflow
        self.runlog = None if mlflow is None else RunLog(store, mlflow, share_model)
        self.groups_of = groups_of
        self.watchers: dict[int, asyncio.Task[None]] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        #: federations whose run werkhub is submitting (its Flower run is no one to adopt)
        self.submitting: set[int] = set()
        #: takes up runs the owner starts with flwr run (from start() on)
        self.adopter: RunAdopter | None = None
        #: what start() leaves to the background (closing MLflow runs, SuperLinks)
        self._background: asyncio.Task[None] | None = None

    # plans ---------------------------------------------------------------------------
    def folder(self, fid: int) -> Path:
        return self.options.state / "federations" / str(fid)

    def link_plan(self, fed: dict[str, Any]) -> LinkPlan:
        return LinkPlan(federation_id=fed["id"], owner=fed["owner"], folder=self.folder(fed["id"]))

    def data_folder(self, user: str, relative: str) -> Path:
        """The absolute data folder of ``user`` (must be a folder inside their home)."""
        home = (self.options.homes / user).resolve()
        path = (home / relative).resolve()
        if not path.is_relative_to(home) or path == home:
            raise Invalid(f"data_folder '{relative}' leads out of your home", field="data_folder")
        if not path.is_dir():
            raise Invalid(
                f"data_folder '{relative}' is not a folder in your home; create it and put "
                "your organisation's data for this federation there",
                field="data_folder",
            )
        return path

    def party_plan(self, party: dict[str, Any], devices: tuple[str, ...] = ()) -> PartyPlan:
        return PartyPlan(
            slug=party["org"],
            user=party["user"],
            data_folder=self.data_folder(party["user"], party["data_folder"]),
            gpu_devices=devices,
        )

    def app_dir(self, fed: dict[str, Any]) -> Path:
        """The Flower app of a federation (a template's or a folder in the owner's home)."""
        app = fed["app"]
        if app.get("template"):
            base = self.options.templates / app["template"]
            for where in (base / "app", base):
                if (where / "pyproject.toml").is_file():
                    return where
            raise Unavailable(f"template '{app['template']}' has no Flower app here")
        home = (self.options.homes / fed["owner"]).resolve()
        path = (home / app["folder"]).resolve()
        if not path.is_relative_to(home) or not (path / "pyproject.toml").is_file():
            raise Conflict(
                f"app folder '{app['folder']}' in {fed['owner']}'s home is not a Flower app "
                "(no pyproject.toml)",
                field="app",
            )
        return path

    def flwr_home(self, user: str) -> str:
        """``$HOME/.flwr`` in ``user``'s own server (the default of the issued files)."""
        return rules.default_flwr_home(self.options.spawner_kind, str(self.options.homes), user)

    def lock(self, fid: int) -> asyncio.Lock:
        return self.locks.setdefault(fid, asyncio.Lock())

    # start and stop ------------------------------------------------------------------
    async def start(self) -> None:
        """Runs the database still calls live end failed at once (the runtime stops every
        Flower process when werkhub ends, so no run survives a restart). Their MLflow runs
        are closed, and the SuperLinks of open federations with parties brought up, in the
        background: the service answers meanwhile (a route that needs a SuperLink starts
        it itself), however many federations there are."""
        stale = []
        for run in await asyncio.to_thread(self.store.live_runs):
            fed = await asyncio.to_thread(self.store.get, run["federation_id"])
            await self._end(fed, run, "failed", RESTARTED, tracked=False)
            stale.append(run)
        self._background = asyncio.create_task(self._resume(stale))
        self.adopter = RunAdopter(self, self.options.adopt_seconds)
        self.adopter.start()

    async def _resume(self, stale: list[dict[str, Any]]) -> None:
        if self.runlog is not None:
            for run in stale:
                await self.runlog.close(run, "failed", None)
        for fed in await asyncio.to_thread(self.store.open_federations):
            if any(p["state"] == "accepted" for p in fed["parties"]):
                try:
                    await self.runtime.ensure_link(self.link_plan(fed))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("the SuperLink of federation %s did not start", fed["id"])

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
        if self.adopter is not None:
            await self.adopter.close()
        for task in list(self.watchers.values()):
            task.cancel()
        for task in list(self.watchers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.watchers.clear()
        await self.runtime.close()
        if self.mlflow is not None:
            await self.mlflow.aclose()

    # parties -------------------------------------------------------------------------
    async def register(self, fed: dict[str, Any], party: dict[str, Any]) -> str:
        """Register a party's SuperNode key with the federation's SuperLink."""
        plan = self.link_plan(fed)
        await self.runtime.ensure_link(plan)
        return await self.runtime.register(plan, self.party_plan(party))

    async def unregister(self, fed: dict[str, Any], slug: str) -> None:
        await self.runtime.unregister(self.link_plan(fed), slug)

    def node_state(self, fid: int, slug: str) -> str:
        try:
            return "connected" if self.runtime.node_alive(fid, slug) else "stopped"
        except Exception:
            return "unknown"

    # runs ----------------------------------------------------------------------------
    async def start_run(self, fed: dict[str, Any], by: str, body: rules.RunCreate) -> dict:
        """Start a run: the run row (refused without enough parties or beside another
        run), bookings, SuperNodes, submission. A failure before the app runs releases
        everything and leaves the run failed with the reason (Conflict raised for a
        refused booking)."""
        app_dir = await asyncio.to_thread(self.app_dir, fed)
        rounds = body.rounds or fed["rounds"]
        parties, row = run_row(fed, rounds, by)
        secagg = row["secure_aggregation"]
        self.submitting.add(fed["id"])  # the run in Flower is werkhub's, not one to adopt
        try:
            run = await asyncio.to_thread(self.store.start_run, fed["id"], row, fed["min_parties"])
            flower_id: int | None = None
            try:
                plan = await self._bring_up(fed, run, parties)
                extra = {**fed["run_config"], **(body.run_config or {})}
                config = rules.flower_run_config(
                    fed["strategy"], rounds, fed["min_parties"], secagg, extra
                )
                try:
                    config = rules.fit_run_config(config, app_settings(app_dir))
                except ValueError as exc:
                    raise Conflict(str(exc), field="run_config") from None
                flower_id = await self.runtime.submit(plan, app_dir, config)
                await self._running(run, flower_id)
            except Exception as exc:
                await self._not_started(fed, run, flower_id, exc)
                if isinstance(exc, Conflict):
                    raise Conflict(f"the run did not start: {exc.message}") from None
                raise
        finally:
            self.submitting.discard(fed["id"])
        return await self._follow(fed, run)

    async def adopt_run(self, fed: dict[str, Any], flower_id: int) -> dict[str, Any] | None:
        """A run the owner started with their own ``flwr run`` (the issued configuration):
        a run of the federation like one started here (bookings, SuperNodes, rounds,
        MLflow, the registered model), with the app's own settings. One werkhub cannot
        take (too few parties, a refused booking) is stopped in Flower; None then."""
        parties, row = run_row(fed, fed["rounds"], fed["owner"])
        row.update(flower_run_id=flower_id, message=f"started by {fed['owner']} with flwr run")
        try:
            run = await asyncio.to_thread(self.store.start_run, fed["id"], row, fed["min_parties"])
        except Conflict as exc:
            log.warning(
                "federation %s: Flower run %s (the owner's flwr run) stopped: %s",
                fed["id"],
                flower_id,
                exc.message,
            )
            with contextlib.suppress(Exception):
                await self.runtime.stop_run(self.link_plan(fed), flower_id)
            return None
        try:
            await self._bring_up(fed, run, parties)
            await self._running(run, flower_id)
        except Exception as exc:
            await self._not_started(fed, run, flower_id, exc)
            return None
        log.info("federation %s: took up Flower run %s as run %s", fed["id"], flower_id, run["id"])
        return await self._follow(fed, run)

    async def _bring_up(
        self, fed: dict[str, Any], run: dict[str, Any], parties: list[dict[str, Any]]
    ) -> LinkPlan:
        """Bookings, then the SuperLink and every party's SuperNode."""
        plans = await self._book(fed, run, parties)
        plan = self.link_plan(fed)
        await self.runtime.ensure_link(plan)
        for party in plans:
            await self.runtime.start_node(plan, party)
        return plan

    async def _running(self, run: dict[str, Any], flower_id: int) -> None:
        values = {"status": "running", "flower_run_id": flower_id}
        await asyncio.to_thread(self.store.update_run, run["id"], values, ("starting",))

    async def _not_started(
        self, fed: dict[str, Any], run: dict[str, Any], flower_id: int | None, exc: Exception
    ) -> None:
        """A run that failed before its app ran: stopped in Flower, released, failed."""
        if flower_id is not None:
            with contextlib.suppress(Exception):
                await self.runtime.stop_run(self.link_plan(fed), flower_id)
        message = exc.message if isinstance(exc, WerkhubError) else f"{exc}"
        await self._end(fed, run, "failed", f"the run did not start: {message}"[:2000])

    async def _follow(self, fed: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
        """MLflow runs opened and a watcher on the run: its current row."""
        run = await asyncio.to_thread(self.store.run, fed["id"], run["id"])
        if self.runlog is not None:
            await self.runlog.open(fed, run)
        self.watch(run)
        return await asyncio.to_thread(self.store.run, fed["id"], run["id"])

    async def _book(
        self, fed: dict[str, Any], run: dict[str, Any], parties: list[dict[str, Any]]
    ) -> list[PartyPlan]:
        """A booking per party that asked for GPUs (in its own organisation's budget);
        the plans of all parties with their devices."""
        plans: list[PartyPlan] = []
        held: dict[str, int] = {}
        try:
            for party in parties:
                devices: tuple[str, ...] = ()
                if party["gpus"] and self.bookings is not None:
                    booking = await self._book_one(party)
                    held[party["org"]] = int(booking["id"])
                    await asyncio.to_thread(
                        self.store.update_run, run["id"], {"bookings": dict(held)}
                    )
                    devices = rules.device_paths(booking)
                elif party["gpus"]:
                    raise Unavailable("GPUs for federations need the booking ledger")
                plans.append(await asyncio.to_thread(self.party_plan, party, devices))
        except BaseException:
            run["bookings"] = held
            raise
        run["bookings"] = held
        return plans

    async def _book_one(self, party: dict[str, Any]) -> dict[str, Any]:
        user, count = party["user"], int(party["gpus"])
        groups = await self.groups_of(user) if self.groups_of else []
        gpu_type = self.gpu_type()
        try:
            booking, _ = await asyncio.to_thread(
                self.bookings.create,
                Caller(name=user),
                user,
                groups,
                gpu_type,
                count,
                None,
                None,
                timedelta(minutes=BOOKING_MINUTES),
                kind="federation",
            )
        except LedgerError as exc:
            raise Conflict(
                f"organisation '{party['org']}' could not book {count} GPU(s) for its party "
                f"user {user}: {exc.message}"
            ) from None
        await asyncio.to_thread(self.bookings.mark_in_use, booking["id"], ACTOR)
        return booking

    def gpu_type(self) -> str:
        units = getattr(self.bookings.settings, "units", ())
        types = sorted({u.gpu_type for u in units if u.id.count("/") == 1})  # whole GPUs
        if not types:
            raise Conflict("this site has no GPUs to book for a federation")
        return types[0]

    async def _release(self, fed: dict[str, Any], run: dict[str, Any]) -> None:
        users = {p["org"]: p["user"] for p in fed["parties"]}
        for slug, booking_id in (run.get("bookings") or {}).items():
            try:
                await asyncio.to_thread(
                    self.bookings.release, Caller(name=users.get(slug) or ""), int(booking_id)
                )
            except Exception as exc:  # ended already (its end passed, or an admin ended it)
                log.info("federation booking %s not released: %s", booking_id, exc)

    async def stop_run(self, fed: dict[str, Any], run: dict[str, Any], by: str) -> None:
        if run["status"] in rules.RUN_ENDED:
            raise Conflict(f"run {run['id']} has ended already ({run['status']})")
        if run["flower_run_id"] is not None:
            with contextlib.suppress(Exception):
                await self.runtime.stop_run(self.link_plan(fed), int(run["flower_run_id"]))
        task = self.watchers.pop(run["id"], None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._end(fed, run, "stopped", f"stopped by {by}")

    async def extend_bookings(self, fed: dict[str, Any], run: dict[str, Any]) -> str | None:
        """Extend each party's booking of a going run that ends within EXTEND_BEFORE (by
        BOOKING_MINUTES, in its own organisation's budget as any change); the sentence of the
        first refusal (the run cannot go on without that party's GPUs), or None."""
        if self.bookings is None or not run.get("bookings"):
            return None
        users = {p["org"]: p.get("user") or "" for p in fed["parties"]}
        for slug, booking_id in run["bookings"].items():
            booking = await asyncio.to_thread(
                self.bookings.get, Caller(ACTOR, True), int(booking_id)
            )
            if booking["end"] - ledger.utcnow() > EXTEND_BEFORE:
                continue
            user = users.get(slug, "")
            groups = await self.groups_of(user) if self.groups_of else []
            try:
                await asyncio.to_thread(
                    self.bookings.change,
                    Caller(name=user),
                    int(booking_id),
                    groups,
                    end=booking["end"] + timedelta(minutes=BOOKING_MINUTES),
                )
            except LedgerError as exc:
                return (
                    f"organisation '{slug}''s GPU booking for this run ends at "
                    f"{booking['end']:%H:%M} UTC and could not be extended: {exc.message}"
                )
        return None

    async def _stop_for(self, fed: dict[str, Any], run: dict[str, Any], reason: str) -> None:
        """End a going run that cannot go on (failed, with ``reason``; nothing registered)."""
        if run["flower_run_id"] is not None:
            with contextlib.suppress(Exception):
                await self.runtime.stop_run(self.link_plan(fed), int(run["flower_run_id"]))
        await self._end(fed, run, "failed", reason)

    # watching ------------------------------------------------------------------------
    def watch(self, run: dict[str, Any]) -> None:
        if run["id"] not in self.watchers or self.watchers[run["id"]].done():
            self.watchers[run["id"]] = asyncio.create_task(self._watch(run["id"], run))

    async def _watch(self, rid: int, run: dict[str, Any]) -> None:
        fid = run["federation_id"]
        checked = asked = 0.0
        while True:
            try:
                fed = await asyncio.to_thread(self.store.get, fid)
                run = await asyncio.to_thread(self.store.run, fid, rid)
                if run["status"] not in LIVE:
                    return
                # Flower's own view costs a flwr process: asked every STATUS_SECONDS
                ask_flower = time.monotonic() >= asked
                if ask_flower:
                    asked = time.monotonic() + STATUS_SECONDS
                if await self._look(fed, run, ask_flower):
                    return
                if time.monotonic() >= checked:
                    checked = time.monotonic() + EXTEND_CHECK_SECONDS
                    refused = await self.extend_bookings(fed, run)
                    if refused:
                        await self._stop_for(fed, run, refused)
                        return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching federation run %s failed; retrying", rid)
            await asyncio.sleep(self.options.poll_seconds)

    def run_dir(self, fid: int, flower_id: int) -> Path:
        return self.folder(fid) / "runs" / str(flower_id)

    def local_file(self, fid: int, slug: str, flower_id: int) -> Path:
        return self.folder(fid) / "parties" / slug / "out" / str(flower_id) / "local.jsonl"

    async def _look(self, fed: dict[str, Any], run: dict[str, Any], ask_flower: bool) -> bool:
        """Read what the app wrote since the last look (and, with ``ask_flower``, Flower's
        state of the run); True once the run has ended."""
        fid, flower_id = fed["id"], int(run["flower_run_id"])
        where = self.run_dir(fid, flower_id)
        cursor = dict(run["cursor"] or {})
        # the app writes its last round before final.json or error.json: an end seen before
        # reading the rounds is acted on after them, one that appears meanwhile at the next look
        failed, finished = (where / "error.json").is_file(), (where / "final.json").is_file()
        lines, problem = await asyncio.to_thread(
            read_new, where / "rounds.jsonl", cursor.get("rounds", 0), rules.parse_round
        )
        for found in lines:
            added = await asyncio.to_thread(self.store.add_round, run["id"], found)
            if added and self.runlog is not None:
                await self.runlog.log_global(run, found)
        cursor["rounds"] = cursor.get("rounds", 0) + len(lines)
        local = dict(cursor.get("local") or {})
        for slug in run["parties"]:
            path = self.local_file(fid, slug, flower_id)
            got, _ = await asyncio.to_thread(read_new, path, local.get(slug, 0), rules.parse_local)
            for item in got:
                if self.runlog is not None:
                    await self.runlog.log_local(run, slug, item)
            local[slug] = local.get(slug, 0) + len(got)
        cursor["local"] = local
        if cursor != (run["cursor"] or {}):
            await asyncio.to_thread(self.store.update_run, run["id"], {"cursor": cursor})
            run["cursor"] = cursor
        if problem:
            await self._end(fed, run, "failed", f"the app wrote a bad rounds.jsonl: {problem}")
            return True
        if failed:
            text = await asyncio.to_thread(read_small, where / "error.json")
            await self._end(fed, run, "failed", rules.parse_error(text))
            return True
        if finished:
            await self._finish(fed, run, where)
            return True
        if not ask_flower:
            return False
        status = await self.runtime.run_status(self.link_plan(fed), flower_id)
        if status.get("status") in ("failed", "stopped"):
            detail = str(status.get("detail") or "")[:1000]
            message = f"Flower ended the run ({status['status']})" + (
                f": {detail}" if detail else ""
            )
            await self._end(fed, run, "failed", message)
            return True
        if status.get("status") == "finished":
            await asyncio.sleep(self.options.poll_seconds)  # its last files may be late
            if not (where / "final.json").is_file() and not (where / "error.json").is_file():
                await self._end(
                    fed, run, "failed", "the app ended without writing final.json or error.json"
                )
                return True
        return False

    async def _finish(self, fed: dict[str, Any], run: dict[str, Any], where: Path) -> None:
        try:
            text = await asyncio.to_thread(read_small, where / "final.json")
            final = rules.parse_final(text)
            if not (where / final.model).is_file():
                raise rules.AppFileError(f"final.json names {final.model}, which is missing")
        except (rules.AppFileError, OSError) as exc:
            await self._end(fed, run, "failed", f"the app's final model is unusable: {exc}")
            return
        model = None
        if self.runlog is not None and run["mlflow"].get("run_id"):
            try:
                model = await self.runlog.register(fed, run, where, final)
            except Exception as exc:
                log.exception("registering the model of federation run %s failed", run["id"])
                await self._end(
                    fed, run, "failed", f"the run finished but its model was not registered: {exc}"
                )
                return
        message = f"finished {final.rounds} round(s)" + (
            f"; model {model['name']} version {model['version']}" if model else ""
        )
        await self._end(fed, run, "finished", message, model=model, metrics=final.metrics)

    async def _end(
        self,
        fed: dict[str, Any],
        run: dict[str, Any],
        status: str,
        message: str,
        model: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tracked: bool = True,
    ) -> None:
        """Stop the parties' SuperNodes, release bookings, close MLflow runs (unless not
        ``tracked``: the caller does), record the end (once: a run that ended already
        stays as it ended)."""
        for slug in run.get("parties") or []:
            with contextlib.suppress(Exception):
                await self.runtime.stop_node(fed["id"], slug)
        if self.bookings is not None:
            await self._release(fed, run)
        if self.runlog is not None and tracked:
            await self.runlog.close(run, status, metrics)
        values: dict[str, Any] = {"status": status, "message": message[:2000]}
        if model is not None:
            values["model"] = model
        await asyncio.to_thread(self.store.update_run, run["id"], values, LIVE)
        log.info("federation %s run %s %s: %s", fed["id"], run["id"], status, message)
