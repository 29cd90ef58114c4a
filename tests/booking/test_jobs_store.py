"""Job storage and scheduling on a real database (SQLite and PostgreSQL), time faked
through the ``werkhub.booking.ledger.utcnow`` seam: visibility, the queue's limits,
retries, shares, cron fires across daylight-saving changes, catch-up, crash recovery,
GPU jobs waiting for a booking."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from werkhub.booking import ledger
from werkhub.booking.ledger import Unit
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.booking.tables import notifications
from werkhub.db import make_engines, upgrade
from werkhub.jobs.errors import Conflict, NotFound, QueueFull
from werkhub.jobs.planning import first_fire, ts
from werkhub.jobs.scheduler import Backend, Scheduler
from werkhub.jobs.spec import parse_spec
from werkhub.jobs.store import JobStore, Retry, Viewer
from werkhub.jobs.tables import job_runs, jobs

BERLIN = ZoneInfo("Europe/Berlin")
ALICE, BOB = Viewer("alice"), Viewer("bob", groups=("qa",))
ADMIN = Viewer("root", admin=True)


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: datetime) -> None:
        self.now = start
        monkeypatch.setattr(ledger, "utcnow", lambda: self.now)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[JobStore]:
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    yield JobStore(writer, reader, tmp_path / "runs")
    writer.dispose()
    reader.dispose()


def spec(**extra: object) -> dict:
    data = {"name": "daily", "notebook": "r.ipynb", **extra}
    return parse_spec(data).model_dump(mode="json")


def count(store: JobStore, table: object) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_owners_see_only_their_jobs_and_names_are_unique(store: JobStore) -> None:
    job = store.create_job("alice", spec(schedule={"kind": "cron", "cron": "0 6 * * *"}), 1.0, 0)
    assert store.get_job(ALICE, job["id"])["name"] == "daily"
    with pytest.raises(NotFound):
        store.get_job(BOB, job["id"])
    assert store.get_job(ADMIN, job["id"])["owner"] == "alice"
    assert store.list_jobs(BOB) == [] and store.list_jobs(BOB, everyone=True) == []
    assert len(store.list_jobs(ADMIN, everyone=True)) == 1
    before = (count(store, jobs), count(store, job_runs))
    with pytest.raises(Conflict) as refused:
        store.create_job("alice", spec(), None, 0)  # same name, schedule "now"
    assert refused.value.field == "name"
    assert (count(store, jobs), count(store, job_runs)) == before  # nothing half-written
    store.create_job("bob", spec(), None, 0)  # another owner may use the name
    with pytest.raises(NotFound):
        store.run_now(BOB, job["id"], 0)
    with pytest.raises(NotFound):
        store.list_runs(BOB, job["id"])


def test_queue_respects_overall_and_per_user_limits(store: JobStore) -> None:
    a = store.create_job("alice", spec(), None, 10)  # "now": queues one run at once
    b = store.create_job("bob", spec(), None, 11)
    for t in (12, 13):
        store.run_now(ALICE, a["id"], t)
    waiting = store.runnable(100, max_concurrent=2, max_per_user=1)
    assert [(r["owner"], r["job_id"]) for r in waiting] == [("alice", a["id"]), ("bob", b["id"])]
    assert all(r["spec"]["name"] == "daily" for r in waiting)
    for run in waiting:
        assert store.mark(run["id"], "running", started=100)
        assert not store.mark(run["id"], "running")  # already taken: nobody starts it twice
    assert store.runnable(100, max_concurrent=2, max_per_user=1) == []
    assert store.runnable(100, max_concurrent=5, max_per_user=1) == []  # alice has one
    more = store.runnable(100, max_concurrent=5, max_per_user=2)
    assert [r["owner"] for r in more] == ["alice"]
    assert store.runnable(5, max_concurrent=5, max_per_user=5) == []  # not before its time
    assert Path(waiting[0]["out_dir"]).parts[-3:] == ("alice", str(a["id"]), str(waiting[0]["id"]))


def test_failed_run_queues_its_retry_and_notifies_in_one_transaction(store: JobStore) -> None:
    job = store.create_job("alice", spec(parameters={"n": 3}), None, 0)
    (run,) = store.runnable(1, 2, 1)
    store.mark(run["id"], "running", started=1)
    done = store.finish(run["id"], "failed", 5, Retry(65), None, error="boom", failed_cell=2)
    assert done["status"] == "failed" and done["failed_cell"] == 2 and done["duration_s"] == 4
    retry = store.get_run(ALICE, done["retry_id"])
    assert (retry["attempt"], retry["retry_of"], retry["trigger"]) == (2, run["id"], "retry")
    assert retry["status"] == "queued" and retry["not_before"] == 65
    assert retry["parameters"] == {"n": 3}
    assert store.runnable(64, 2, 1) == [] and len(store.runnable(65, 2, 1)) == 1
    store.mark(retry["id"], "running", started=65)
    store.finish(retry["id"], "failed", 70, None, ("job_failed", "Job 'daily' failed"))
    with store.read() as conn:
        notes = conn.execute(select(notifications)).mappings().all()
    assert [(n["user"], n["kind"], n["booking_id"]) for n in notes] == [
        ("alice", "job_failed", None)
    ]
    assert (notes[0]["job_id"], notes[0]["run_id"]) == (job["id"], retry["id"])
    assert [r["attempt"] for r in store.list_runs(ALICE, job["id"])] == [2, 1]


def test_reports_are_private_until_shared_with_a_group(store: JobStore) -> None:
    store.create_job("alice", spec(), None, 0)
    (run,) = store.runnable(1, 2, 1)
    with pytest.raises(Conflict):
        store.share(ALICE, run["id"], "qa", 1)  # no report yet
    store.mark(run["id"], "running", started=1)
    store.finish(run["id"], "succeeded", 2, None, None)
    assert [r["id"] for r in store.reports(ALICE)] == [run["id"]]
    assert store.reports(BOB) == []
    with pytest.raises(NotFound):
        store.get_run(BOB, run["id"], shared=True)
    with pytest.raises(NotFound):
        store.share(BOB, run["id"], "qa", 3)  # only the owner (or an admin) shares
    assert store.share(ALICE, run["id"], "qa", 3) == ["qa"]
    assert store.share(ALICE, run["id"], "qa", 3) == ["qa"]  # idempotent
    assert [r["shared_with"] for r in store.reports(BOB)] == [["qa"]]
    assert store.get_run(BOB, run["id"], shared=True)["id"] == run["id"]
    with pytest.raises(NotFound):
        store.get_run(BOB, run["id"])  # the run record itself stays private
    assert store.reports(Viewer("carl", groups=("ops",))) == []
    assert store.unshare(ALICE, run["id"], "qa") == []
    assert store.reports(BOB) == []
    with pytest.raises(NotFound):
        store.unshare(ALICE, run["id"], "qa")


def test_delete_keeps_runs_and_cancels_queued_ones(store: JobStore) -> None:
    job = store.create_job("alice", spec(), None, 0)
    (queued,) = store.list_runs(ALICE, job["id"])
    assert store.delete_job(ALICE, job["id"], 5) == []
    with pytest.raises(NotFound):
        store.get_job(ALICE, job["id"])
    run = store.get_run(ALICE, queued["id"])
    assert run["status"] == "cancelled" and "deleted" in run["error"]
    store.create_job("alice", spec(), None, 6)  # the name is free again


def test_a_flood_by_one_owner_delays_another_by_one_slot_at_most(store: JobStore) -> None:
    store.max_queued = 1000  # a flood far beyond the 140 runs the queue used to look at
    flood = store.create_job("alice", spec(), None, 0)
    for t in range(1, 200):
        store.run_now(ALICE, flood["id"], t)
    other = store.create_job("bob", spec(), None, 500)
    (first,) = store.runnable(1000, max_concurrent=1, max_per_user=1)
    assert first["owner"] == "alice"  # nobody was served yet: the oldest run goes first
    store.mark(first["id"], "running", started=1000)
    # alice has one running: the second slot is bob's, not another of alice's 199
    (second,) = store.runnable(1000, max_concurrent=2, max_per_user=1)
    assert (second["owner"], second["job_id"]) == ("bob", other["id"])
    store.finish(first["id"], "succeeded", 1001, None, None)
    # one slot, alice served last: bob's run is next although alice's are all older
    (turn,) = store.runnable(1001, max_concurrent=1, max_per_user=3)
    assert turn["id"] == second["id"]
    store.mark(turn["id"], "running", started=1002)
    store.finish(turn["id"], "succeeded", 1003, None, None)
    (back,) = store.runnable(1003, max_concurrent=1, max_per_user=3)
    assert back["owner"] == "alice"  # and then alice's turn again


def test_queue_cap_refuses_run_now_and_stores_nothing(store: JobStore) -> None:
    store.max_queued = 3
    job = store.create_job("alice", spec(), None, 0)  # "now": one queued run
    for t in (1, 2):
        store.run_now(ALICE, job["id"], t)
    before = (count(store, jobs), count(store, job_runs))
    with pytest.raises(QueueFull) as refused:
        store.run_now(ALICE, job["id"], 3)
    assert refused.value.status == 429
    assert "3 runs waiting" in refused.value.message
    assert "jobs.max_queued_per_user" in refused.value.message
    with pytest.raises(QueueFull):  # a "now" job would queue one more: not stored either
        store.create_job("alice", spec(name="another"), None, 4)
    assert (count(store, jobs), count(store, job_runs)) == before
    store.run_now(BOB, store.create_job("bob", spec(), None, 5)["id"], 6)  # others may
    (run, *_) = store.runnable(10, max_concurrent=1, max_per_user=1)
    store.mark(run["id"], "running", started=10)  # running does not count as waiting
    assert store.run_now(ALICE, job["id"], 11)["status"] == "queued"


def test_cron_fires_beyond_the_cap_are_skipped_with_a_notice(store: JobStore) -> None:
    store.max_queued = 2
    data = spec(schedule={"kind": "cron", "cron": "0 6 * * *"})
    job = store.create_job("alice", data, 100.0, 0)
    fires = [(100.0 + i, "catch_up") for i in range(4)]
    ids = store.record_fires(job["id"], 100.0, fires, 200.0, 150)
    assert len(ids) == 2 and count(store, job_runs) == 2
    assert store.get_job(ALICE, job["id"])["next_fire"] == 200.0  # the schedule moves on
    with store.read() as conn:
        (note,) = conn.execute(select(notifications)).mappings().all()
    assert note["user"] == "alice" and note["job_id"] == job["id"]
    assert "2 times were skipped" in note["message"]


# ---- the scheduler on the same database ------------------------------------------------


def scheduler(store: JobStore, **kw: object) -> Scheduler:
    backend = Backend(kind="kubernetes", homes=store.runs_dir / "homes")
    return Scheduler(store, backend, **kw)  # type: ignore[arg-type]


def make_cron_job(store: JobStore, cron: str, now: datetime, **extra: object) -> dict:
    data = spec(schedule={"kind": "cron", "cron": cron, "tz": "Europe/Berlin"}, **extra)
    return store.create_job("alice", data, first_fire(parse_spec(data), now), ts(now))


def fired(store: JobStore, job_id: int) -> list[tuple[datetime, str]]:
    runs = sorted(store.list_runs(ALICE, job_id), key=lambda r: r["id"])
    return [(datetime.fromtimestamp(r["scheduled_for"], UTC), r["trigger"]) for r in runs]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_cron_fires_at_local_times_across_daylight_saving(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = local(2026, 3, 27, 12, 0)
    clock = Clock(monkeypatch, start.astimezone(UTC))
    job = make_cron_job(store, "30 2 * * *", clock.now)
    sched = scheduler(store)
    # step through four days in 10-minute ticks, as the loop would
    while clock.now < local(2026, 3, 31, 12, 0):
        asyncio.run(sched.fire_due(clock.now))
        clock.now += timedelta(minutes=10)
    times = [t.astimezone(BERLIN) for t, _ in fired(store, job["id"])]
    assert [(t.day, t.hour, t.minute) for t in times] == [
        (28, 2, 30),  # CET
        (29, 3, 0),  # 02:30 does not exist: once, at the first instant after the gap
        (30, 2, 30),  # CEST
        (31, 2, 30),
    ]
    assert [t.utcoffset() for t in times] == [timedelta(hours=h) for h in (1, 2, 2, 2)]
    assert {trigger for _, trigger in fired(store, job["id"])} == {"schedule"}
    # autumn: 02:30 happens twice on 25 October; the job runs once, at the first
    clock.now = local(2026, 10, 24, 12, 0).astimezone(UTC)
    autumn = make_cron_job(store, "30 2 * * *", clock.now, name="autumn")
    while clock.now < local(2026, 10, 26, 12, 0):
        asyncio.run(sched.fire_due(clock.now))
        clock.now += timedelta(minutes=10)
    utc = [t for t, _ in fired(store, autumn["id"])]
    assert [t.strftime("%d %H:%M") for t in utc] == ["25 00:30", "26 01:30"]


@pytest.mark.parametrize(("policy", "expected"), [("once", 1), ("all", 3), ("skip", 0)])
def test_fires_missed_while_down_follow_the_catch_up_policy(
    store: JobStore, monkeypatch: pytest.MonkeyPatch, policy: str, expected: int
) -> None:
    clock = Clock(monkeypatch, local(2026, 6, 1, 12, 0).astimezone(UTC))
    job = make_cron_job(store, "0 6 * * *", clock.now, catch_up=policy)
    clock.now = local(2026, 6, 4, 9, 0).astimezone(UTC)  # werkhub was down 3 mornings
    asyncio.run(scheduler(store).fire_due(clock.now))
    runs = fired(store, job["id"])
    assert len(runs) == expected
    assert {trigger for _, trigger in runs} <= {"catch_up"}
    if policy == "once":
        assert runs[0][0] == local(2026, 6, 4, 6, 0)  # the newest missed fire, late
    after = store.get_job(ALICE, job["id"])
    assert after["next_fire"] == ts(local(2026, 6, 5, 6, 0))  # then back on schedule
    asyncio.run(scheduler(store).fire_due(clock.now))
    assert len(fired(store, job["id"])) == expected  # nothing fires twice


def test_paused_jobs_do_not_fire_and_resume_from_now(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, local(2026, 6, 1, 12, 0).astimezone(UTC))
    job = make_cron_job(store, "0 6 * * *", clock.now)
    store.set_paused(ALICE, job["id"], True, None, ts(clock.now))
    clock.now = local(2026, 6, 3, 12, 0).astimezone(UTC)
    asyncio.run(scheduler(store).fire_due(clock.now))
    assert fired(store, job["id"]) == []
    spec_ = parse_spec({k: v for k, v in job.items() if k in spec()})
    resumed = store.set_paused(ALICE, job["id"], False, first_fire(spec_, clock.now), 0)
    assert resumed["next_fire"] == ts(local(2026, 6, 4, 6, 0))
    asyncio.run(scheduler(store).fire_due(clock.now))
    assert fired(store, job["id"]) == []


def test_crash_recovery_ends_the_orphan_and_retries_per_policy(store: JobStore) -> None:
    job = store.create_job("alice", spec(retries={"max": 1, "backoff_s": 30}), None, 0)
    (run,) = store.runnable(1, 2, 1)
    store.mark(run["id"], "running", started=1)
    orphan = subprocess.Popen(  # what a killed service leaves behind: the runner's group
        [
            sys.executable,
            "-c",
            "import time; time.sleep(120)",
            "werkhub.jobs.run.execute",
            run["out_dir"],
        ],
        start_new_session=True,
    )
    try:
        store.set_pid(run["id"], orphan.pid)
        asyncio.run(scheduler(store).recover())
        assert orphan.wait(timeout=15) != 0
    finally:
        if orphan.poll() is None:
            orphan.kill()
    runs = {r["id"]: r for r in store.list_runs(ALICE, job["id"])}
    assert runs[run["id"]]["status"] == "interrupted"
    (retry,) = [r for r in runs.values() if r["id"] != run["id"]]
    assert (retry["status"], retry["attempt"], retry["trigger"]) == ("queued", 2, "retry")
    assert retry["not_before"] >= time.time() + 25
    assert count(store, notifications) == 0  # announced only when no retry is left


def test_gpu_job_waits_for_a_booking_and_releases_it(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, datetime.now(UTC).replace(second=0, microsecond=0))
    units = (Unit(id="n/0", node="n", gpu_type="L40S", index=0, simulated=True),)
    policies = PolicySet(default=Policy(gpu_hours_per_week=100, max_concurrent_gpus=2))
    manager = BookingManager(store.writer, store.reader, Settings(units, policies, BERLIN))
    inventory = {
        "units": [{"id": "n/0", "node": "n", "simulated": True, "gpu_type": "L40S"}],
        "nodes": [{"name": "n", "devices": [{"index": 0, "model": "L40S", "memory_gb": 48}]}],
    }
    blocker, _ = manager.create(
        Caller("bob"), "bob", [], "L40S", 1, None, None, timedelta(minutes=30)
    )
    job = store.create_job("alice", spec(gpu={"type": "L40S", "minutes": 20}), None, 0)
    sched = scheduler(store, bookings=manager, inventory=inventory)

    async def tick() -> None:
        await sched.start_runnable(clock.now)
        for task in list(sched.tasks.values()):
            await task

    asyncio.run(tick())
    (run,) = store.list_runs(ALICE, job["id"])
    assert run["status"] == "waiting_gpu"
    manager.release(Caller("bob"), blocker["id"])
    asyncio.run(tick())
    (run,) = store.list_runs(ALICE, job["id"])
    # the kubernetes backend has no cluster here: the run fails after getting its GPU
    assert run["status"] == "failed" and "Kubernetes cluster" in run["error"]
    booking = manager.get(Caller("alice"), run["booking_id"])
    assert booking["user"] == "alice" and booking["state"] == "released"
    assert [a["action"] for a in booking["audit"]][:2] == ["create", "activate"]
    assert os.path.isfile(Path(run["out_dir"]) / "request.json")


def test_a_gpu_run_waiting_for_a_gpu_leaves_its_slot_to_the_next_run(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, datetime.now(UTC).replace(second=0, microsecond=0))
    units = (Unit(id="n/0", node="n", gpu_type="L40S", index=0, simulated=True),)
    policies = PolicySet(default=Policy(gpu_hours_per_week=100, max_concurrent_gpus=2))
    manager = BookingManager(store.writer, store.reader, Settings(units, policies, BERLIN))
    manager.create(Caller("carl"), "carl", [], "L40S", 1, None, None, timedelta(minutes=30))
    gpu = store.create_job("alice", spec(gpu={"type": "L40S", "minutes": 20}), None, 0)
    cpu = store.create_job("bob", spec(), None, 1)
    sched = scheduler(store, bookings=manager, max_concurrent=1, max_per_user=1)

    async def tick() -> None:
        await sched.start_runnable(clock.now)
        for task in list(sched.tasks.values()):
            await task

    asyncio.run(tick())
    assert [r["status"] for r in store.list_runs(ALICE, gpu["id"])] == ["waiting_gpu"]
    (run,) = store.list_runs(BOB, cpu["id"])
    assert run["started"] is not None  # the one slot went to bob's run meanwhile
