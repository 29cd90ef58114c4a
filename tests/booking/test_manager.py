"""The booking manager on a real database: rules, states, waitlist, idempotency, races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from werkhub.booking import ledger, reads
from werkhub.booking.ledger import LedgerError, NotFound, Unit
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.booking.tables import audit, booking_units, bookings, ledger_spans
from werkhub.db import make_engines, upgrade

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
UNITS = tuple(
    [Unit(id=f"a/{i}", node="a", gpu_type="H100", index=i) for i in range(2)]
    + [Unit(id="b/0", node="b", gpu_type="L40S", index=0)]
)
ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = NOW
        monkeypatch.setattr(ledger, "utcnow", lambda: self.now)

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def manager(db_url: str, clock: Clock) -> Iterator[BookingManager]:
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    policies = PolicySet(
        default=Policy(
            gpu_hours_per_week=10, max_booking_hours=8, max_advance_days=14, max_concurrent_gpus=2
        )
    )
    yield BookingManager(writer, reader, Settings(UNITS, policies, ZoneInfo("Europe/Berlin")))
    writer.dispose()
    reader.dispose()


def book(
    m: BookingManager,
    who: Caller,
    start: datetime | None,
    hours: float = 1,
    count: int = 1,
    gpu_type: str = "H100",
    **kw: object,
) -> dict:
    booking, _ = m.create(
        who, who.name, who.groups, gpu_type, count, start, None, timedelta(hours=hours), **kw
    )  # type: ignore[arg-type]
    return booking


def test_book_now_and_in_advance_with_devices(manager: BookingManager) -> None:
    now = book(manager, ALICE, None)
    assert now["start"] == NOW and now["devices"] == ["a/0"] and now["state"] == "booked"
    later = book(manager, ALICE, NOW + 2 * H, count=2)
    assert later["devices"] == ["a/0", "a/1"]
    assert [a["action"] for a in later["audit"]] == ["create"]


def test_conflict_names_earliest_free_slot(manager: BookingManager) -> None:
    book(manager, ALICE, NOW, hours=3, count=2)
    with pytest.raises(LedgerError) as info:
        book(manager, BOB, NOW + H, hours=2)
    assert info.value.kind == "conflict"
    assert info.value.detail["earliest_free"] == {"start": NOW + 3 * H, "end": NOW + 5 * H}


def test_input_and_policy_refusals_store_nothing(manager: BookingManager) -> None:
    cases = [
        ({"gpu_type": "A100"}, "invalid", "unknown GPU type"),
        ({"count": 3}, "invalid", "fit on one node"),
        ({"start": NOW - 2 * H}, "invalid", "past"),
        ({"hours": 9}, "policy", "at most 8 h"),
        ({"start": NOW + timedelta(days=15)}, "policy", "14 days ahead"),
    ]
    for change, kind, text in cases:
        args = {"start": NOW, "hours": 1, "count": 1, "gpu_type": "H100", **change}
        with pytest.raises(LedgerError, match=text) as info:
            book(manager, ALICE, args.pop("start"), **args)  # type: ignore[arg-type]
        assert info.value.kind == kind
    with manager.read() as conn:
        assert conn.execute(select(func.count()).select_from(bookings)).scalar() == 0


def test_quota_refunded_on_cancel_and_no_show(manager: BookingManager, clock: Clock) -> None:
    first = book(manager, ALICE, NOW + H, hours=5, count=2)  # 10 GPU-hours: all of it
    with pytest.raises(LedgerError, match="weekly quota") as info:
        book(manager, ALICE, NOW + 7 * H, hours=1, gpu_type="L40S")
    assert info.value.detail["remaining"] == 0
    manager.cancel(ALICE, first["id"])
    second = book(manager, ALICE, NOW + H, hours=5, count=2)
    clock.advance(H + timedelta(minutes=15))
    assert manager.tick(running=set())["no_show"] == 1
    assert manager.get(ALICE, second["id"])["state"] == "no_show"
    book(manager, ALICE, None, hours=5, count=2)  # refunded again
    notes = manager.notifications("alice")
    assert notes[0]["kind"] == "no_show" and f"booking {second['id']}" in notes[0]["message"]


def test_notifications_are_marked_read_by_their_owner_only(
    manager: BookingManager, clock: Clock
) -> None:
    for caller, gpu_type in ((ALICE, "H100"), (ALICE, "L40S"), (BOB, "H100")):
        book(manager, caller, NOW + H, hours=1, gpu_type=gpu_type)
    clock.advance(H + timedelta(minutes=15))
    assert manager.tick(running=set())["no_show"] == 3
    first, second = (n["id"] for n in manager.notifications("alice"))
    (bobs,) = (n["id"] for n in manager.notifications("bob"))
    with pytest.raises(NotFound, match=f"no notification {bobs} of yours"):
        manager.mark_read("alice", [first, bobs])  # all or nothing
    assert len(manager.notifications("alice", unread_only=True)) == 2
    assert manager.mark_read("alice", [first]) == 1
    assert manager.mark_read("alice", [first]) == 0  # already read
    assert [n["id"] for n in manager.notifications("alice", unread_only=True)] == [second]
    assert manager.mark_read("alice", None) == 1
    assert manager.notifications("alice", unread_only=True) == []
    assert [n["read"] for n in manager.notifications("alice")] == [True, True]
    assert manager.notifications("bob", unread_only=True)[0]["id"] == bobs  # untouched


def test_other_users_bookings_are_invisible(manager: BookingManager) -> None:
    mine = book(manager, ALICE, NOW)
    for action in (manager.get, manager.cancel, manager.release):
        with pytest.raises(NotFound):
            action(BOB, mine["id"])
    with pytest.raises(NotFound):
        manager.change(BOB, mine["id"], (), end=NOW + 2 * H)
    assert manager.list(BOB) == []
    assert [b["id"] for b in manager.list(ADMIN)] == [mine["id"]]
    assert manager.get(ADMIN, mine["id"])["user"] == "alice"


def test_extend_keeps_devices_and_refuses_when_taken(manager: BookingManager, clock: Clock) -> None:
    mine = book(manager, ALICE, NOW, hours=1)
    longer = manager.change(ALICE, mine["id"], (), end=NOW + 2 * H)
    assert longer["devices"] == mine["devices"] and longer["end"] == NOW + 2 * H
    book(manager, BOB, NOW + 2 * H, hours=1, count=2)
    with pytest.raises(LedgerError) as info:
        manager.change(ALICE, mine["id"], (), end=NOW + 3 * H)
    assert info.value.kind == "conflict"
    shorter = manager.change(ALICE, mine["id"], (), end=NOW + H)
    assert shorter["end"] == NOW + H
    assert [a["action"] for a in shorter["audit"]] == ["create", "change", "change"]


def test_cancel_only_before_start_release_only_after(manager: BookingManager, clock: Clock) -> None:
    future = book(manager, ALICE, NOW + H)
    with pytest.raises(LedgerError, match="has started can be released"):
        manager.release(ALICE, future["id"])
    clock.advance(H + timedelta(minutes=10, seconds=30))
    manager.tick(running={"alice"})
    assert manager.get(ALICE, future["id"])["state"] == "active"
    with pytest.raises(LedgerError, match="not started can be cancelled"):
        manager.cancel(ALICE, future["id"])
    released = manager.release(ALICE, future["id"])
    assert released["state"] == "released"
    assert released["end"] == NOW + H + timedelta(minutes=11)
    assert released["booked_end"] == NOW + 2 * H
    usage = manager.usage(NOW, NOW + 3 * H, "alice")["alice"]
    assert usage["booked"] == pytest.approx(1.0)
    assert usage["released"] == pytest.approx(49 / 60, abs=1e-3)
    assert usage["used"] >= 0


def test_waitlist_is_served_in_order_with_notice(manager: BookingManager) -> None:
    blocker = book(manager, ALICE, NOW + H, hours=2, count=2)
    first = manager.enqueue(BOB, "bob", "H100", 2, NOW + H, H, NOW + 2 * H)
    second = manager.enqueue(ADMIN, "carol", "H100", 1, NOW + H, H, NOW + H + H / 2)
    assert first["state"] == second["state"] == "waiting"
    manager.cancel(ALICE, blocker["id"])
    entries = {e["id"]: e for e in manager.waitlist(ADMIN)}
    assert entries[first["id"]]["state"] == "granted"
    assert entries[second["id"]]["state"] == "waiting"  # bob took both units first
    granted = manager.get(BOB, entries[first["id"]]["booking_id"])
    assert granted["start"] == NOW + H and granted["created_by"] == "waitlist"
    assert manager.notifications("bob")[0]["kind"] == "waitlist_granted"
    assert manager.waitlist(BOB) == [entries[first["id"]]]


def test_idempotency_key_replays_and_rejects_reuse(manager: BookingManager) -> None:
    first, replayed = manager.create(
        ALICE, "alice", (), "H100", 1, NOW, None, H, key="k1", request_hash="h1"
    )
    again, replayed2 = manager.create(
        ALICE, "alice", (), "H100", 1, NOW, None, H, key="k1", request_hash="h1"
    )
    assert not replayed and replayed2 and again["id"] == first["id"]
    with pytest.raises(LedgerError, match="different request"):
        manager.create(ALICE, "alice", (), "H100", 1, NOW, None, H, key="k1", request_hash="h2")
    assert len(manager.list(ALICE)) == 1


def test_database_refuses_double_promise_itself(manager: BookingManager) -> None:
    mine = book(manager, ALICE, NOW, hours=2)
    minute = int(NOW.timestamp() // 60)
    with pytest.raises(IntegrityError), manager.writer.begin() as conn:
        conn.execute(
            insert(booking_units).values(
                booking_id=mine["id"],
                gpu_type="H100",
                unit="a/0",
                start_min=minute + 30,
                end_min=minute + 90,
                holding=True,
            )
        )


def test_racing_threads_get_exactly_the_capacity(manager: BookingManager) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def race(i: int) -> None:
        who = Caller(f"user{i}")
        try:
            book(manager, who, NOW + H)
            outcome = "ok"
        except LedgerError as exc:
            outcome = exc.kind
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("ok") == 2 and results.count("conflict") == 22
    with manager.read() as conn:
        assert conn.execute(select(func.count()).select_from(bookings)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(booking_units)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(audit)).scalar() == 2


def test_warning_before_end_rearmed_by_extension_and_end_reported(
    manager: BookingManager, clock: Clock
) -> None:
    mine = book(manager, ALICE, None, hours=1)
    manager.mark_started(mine["id"])  # her server starts with the devices: active
    clock.advance(timedelta(minutes=46))
    assert manager.tick(running={"alice"})["warned"] == 1
    assert manager.tick(running={"alice"})["warned"] == 0  # once per end time
    assert manager.notifications("alice")[0]["kind"] == "booking_ending"
    manager.change(ALICE, mine["id"], (), end=NOW + 2 * H)
    assert manager.tick(running={"alice"})["warned"] == 0  # no longer ending soon
    clock.advance(H)
    assert manager.tick(running={"alice"})["warned"] == 1  # re-armed for the new end
    clock.advance(timedelta(minutes=20))
    result = manager.tick(running={"alice"})
    assert result["ended"] == 1 and result["ended_running"] == [("alice", mine["id"])]
    assert manager.get(ALICE, mine["id"])["state"] == "ended"
    used = manager.usage(NOW, NOW + 3 * H, "alice")["alice"]["used"]
    assert used == pytest.approx(2.0, abs=0.05)  # server ran with the GPU all along


def test_idle_gpus_reported_once_then_released(manager: BookingManager, clock: Clock) -> None:
    from werkhub.booking.idle import Verdict

    mine = book(manager, ALICE, None, hours=2)
    manager.tick(running={"alice"})
    assert [s.id for s in manager.active_slots()] == [mine["id"]]
    since = NOW
    report = Verdict(state="idle", action="report", idle_since=since, units=[], reason="")
    assert manager.idle_action(mine["id"], report) is True
    assert manager.idle_action(mine["id"], report) is False  # once per idle streak
    assert manager.notifications("alice")[0]["kind"] == "gpu_idle"
    clock.advance(timedelta(minutes=40))
    release = Verdict(
        state="idle", action="release", idle_since=NOW + timedelta(minutes=35), units=[], reason=""
    )
    assert manager.idle_action(mine["id"], release) is True
    after = manager.get(ALICE, mine["id"])
    assert after["state"] == "released" and after["end"] == NOW + timedelta(minutes=40)
    assert [a["action"] for a in after["audit"]][-2:] == ["idle", "idle_release"]


def test_unused_booking_over_before_a_tick_is_a_no_show_not_ended(
    manager: BookingManager, clock: Clock
) -> None:
    thirty = book(manager, ALICE, NOW + H, hours=0.5)
    short = book(manager, BOB, NOW + H, hours=10 / 60)  # shorter than the 15-min grace
    clock.advance(H + timedelta(minutes=40))
    result = manager.tick(running=set())
    assert result["no_show"] == 2 and result["ended"] == 0
    for who, booking in ((ALICE, thirty), (BOB, short)):
        after = manager.get(who, booking["id"])
        assert after["state"] == "no_show"
        assert [a["action"] for a in after["audit"]] == ["create", "no_show"]
    assert manager.usage(NOW, NOW + 3 * H, "alice") == {
        "alice": {"booked": pytest.approx(0.5), "used": 0.0, "released": 0.0}
    }


def test_servers_never_keep_devices_past_their_booking(
    manager: BookingManager, clock: Clock
) -> None:
    """A server that becomes ready only after its booking ended, one whose start completes
    after the end, and one whose booking was released are each ended exactly once; a
    server restarted CPU-only is left alone."""
    slow = book(manager, ALICE, None, hours=1)
    manager.mark_started(slow["id"])  # started, not ready yet
    late = book(manager, BOB, None, hours=1)  # prepared; its start completes after the end
    clock.advance(H + timedelta(minutes=1))
    assert manager.tick(running=set())["ended_running"] == []  # nobody ready
    manager.mark_started(late["id"])
    result = manager.tick(running={"alice", "bob"})
    assert sorted(result["ended_running"]) == [("alice", slow["id"]), ("bob", late["id"])]
    assert manager.tick(running={"alice", "bob"})["ended_running"] == []  # once
    manager.servers.end_failed("alice", slow["id"])  # the hub did not answer: again
    assert manager.tick(running={"alice", "bob"})["ended_running"] == [("alice", slow["id"])]
    released = book(manager, BOB, None, hours=1, gpu_type="L40S")
    manager.mark_started(released["id"])
    assert manager.tick(running={"bob"})["ended_running"] == []
    manager.release(BOB, released["id"])
    assert manager.tick(running={"bob"})["ended_running"] == [("bob", released["id"])]
    cpu = book(manager, ALICE, None, hours=1)
    manager.mark_started(cpu["id"])
    manager.mark_cpu_server("alice")  # restarted without devices
    newer = book(manager, BOB, None, hours=1, gpu_type="L40S")
    manager.mark_started(newer["id"])  # bob started anew on another booking meanwhile
    manager.servers.end_failed("bob", released["id"])  # so the failed end is not re-armed
    assert manager.tick(running={"bob"})["ended_running"] == []
    manager.release(BOB, newer["id"])
    assert manager.tick(running={"bob"})["ended_running"] == [("bob", newer["id"])]
    version = manager.version
    manager.mark_cpu_server("alice")  # nothing left to forget: no write transaction
    assert manager.version == version
    clock.advance(H + timedelta(minutes=1))
    result = manager.tick(running={"alice"})
    assert result["ended"] == 1 and result["ended_running"] == []  # a CPU server stays up


def test_create_answers_what_get_reads_back(manager: BookingManager) -> None:
    """create builds its answer from what it wrote, without reading it back: it must be
    exactly what a later read of the booking shows."""
    made = book(manager, ALICE, NOW + H, hours=2)
    assert made == manager.get(ALICE, made["id"])
    assert made["audit"][0]["action"] == "create" and made["state"] == "booked"


def test_units_written_without_a_type_get_their_bookings_type(manager: BookingManager) -> None:
    """Availability reads units by type (migration 0007): a unit row written without one
    takes its booking's type on SQLite, and is refused on PostgreSQL (NOT NULL)."""
    mine = book(manager, ALICE, NOW + H, hours=1)
    minute = int((NOW + 5 * H).timestamp() // 60)
    row = {
        "booking_id": mine["id"],
        "unit": "a/1",
        "start_min": minute,
        "end_min": minute + 60,
        "holding": True,
    }
    if manager.writer.dialect.name == "postgresql":
        with pytest.raises(IntegrityError), manager.writer.begin() as conn:
            conn.execute(insert(booking_units).values(**row))
        return
    with manager.writer.begin() as conn:
        conn.execute(insert(booking_units).values(**row))
    with manager.read() as conn:
        types = conn.execute(select(booking_units.c.gpu_type)).scalars().all()
    assert types == ["H100", "H100"]
    steps = manager.availability("H100", NOW + 5 * H, NOW + 6 * H, H)
    assert [s["free"] for s in steps] == [1]


def test_range_queries_look_back_as_far_as_the_longest_booking(manager: BookingManager) -> None:
    """Reads look back from a window no further than the longest booking of the type
    (``ledger_spans``): a booking made longer later, by extension or by a longer create,
    must still be seen from a window that starts days after it began."""
    book(manager, ALICE, NOW + H, hours=1)  # the type's longest: one hour
    longer = book(manager, ADMIN, NOW + 2 * H, hours=2, count=2, override=True)
    manager.change(ADMIN, longer["id"], (), end=NOW + 2 * H + 5 * 24 * H, override=True)
    later = NOW + 4 * 24 * H
    assert [s["free"] for s in manager.availability("H100", later, later + H, H)] == [0]
    with pytest.raises(LedgerError) as info:
        book(manager, BOB, later, hours=1)
    assert info.value.kind == "conflict"
    with manager.read() as conn:
        spans = dict(conn.execute(select(ledger_spans)).all())
    assert spans["H100"] == 5 * 24 * 60
    with manager.read() as conn:
        assert [s.id for s in reads.user_slots(conn, "root", later, later + H)] == [longer["id"]]
