"""Guaranteed GPUs, borrowing and reclaim in the ledger, on SQLite and PostgreSQL: a
booking beyond its organisation's guarantee is borrowed; when an organisation books within
its guarantee and only borrowed bookings stand in the way, those end at the new booking's
start (at least warn_minutes ahead) and their holders are told; guaranteed bookings are
never reclaimed; a booking that cannot fit even then is refused and cuts nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.orgs import book, ledger_with_orgs
from werkhub.booking import guarantees, ledger
from werkhub.booking.ledger import LedgerError, Unit
from werkhub.booking.manager import BookingManager, Caller
from werkhub.orgs.store import OrgStore

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
UNITS = tuple(Unit(id=f"n/{i}", node="n", gpu_type="H100", index=i) for i in range(4))
ANN, BOB, CY, ZED = Caller("ann"), Caller("bob"), Caller("cy"), Caller("zed")


@pytest.fixture
def setup(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BookingManager, OrgStore]]:
    monkeypatch.setattr(ledger, "utcnow", lambda: NOW)
    with ledger_with_orgs(db_url, UNITS, {"ann": "acme", "bob": "beta", "cy": "gamma"}) as (
        manager,
        orgs,
    ):
        orgs.set_guarantees("acme", {"H100": 2}, {"H100": 4})
        orgs.set_guarantees("beta", {"H100": 1}, {"H100": 4})
        yield manager, orgs


def test_borrowed_bookings_are_reclaimed_with_a_warning(
    setup: tuple[BookingManager, OrgStore],
) -> None:
    m, _ = setup
    borrowed = book(m, CY, None, 4, 4)  # gamma has no guarantee: all four borrowed
    assert borrowed["borrowed"] is True
    mine = book(m, ANN, None, 2, 2)  # acme within its guarantee of 2
    assert mine["borrowed"] is False
    assert mine["start"] == NOW + timedelta(minutes=15)  # the holder's warning time
    cut = m.get(Caller("root", admin=True), borrowed["id"])
    # werkhub shortened it: the reclaimed time is neither booked nor released by its holder
    assert cut["end"] == mine["start"] and cut["booked_end"] == mine["start"]
    assert cut["audit"][-1]["action"] == "reclaim"
    notice = m.notifications("cy")[-1]
    assert notice["kind"] == "reclaim" and "in 15 min" in notice["message"]
    assert "acme" in notice["message"] and "restarts without GPUs" in notice["message"]
    # the service restarts the reclaimed booking's server without GPUs at its end
    assert guarantees.reclaimed(m.reader, [borrowed["id"], mine["id"]]) == {borrowed["id"]}
    # the reclaim's notice is the warning of that end: no second, contradicting one
    # ("extend it ... then the server will stop") from the tick's ending-soon check
    assert m.tick(running={"cy"})["warned"] == 0
    assert [n["kind"] for n in m.notifications("cy")] == ["reclaim"]


def test_guaranteed_bookings_are_never_reclaimed(setup: tuple[BookingManager, OrgStore]) -> None:
    m, _ = setup
    kept = book(m, BOB, None, 4, 1)  # beta within its guarantee of 1
    assert kept["borrowed"] is False
    taken = book(m, ZED, None, 4, 3)  # outside every organisation, on a guaranteed type
    assert taken["borrowed"] is True
    mine = book(m, ANN, None, 2, 2)
    assert m.get(Caller("root", admin=True), kept["id"])["end"] == NOW + 4 * H
    assert m.get(Caller("root", admin=True), taken["id"])["end"] == mine["start"]


def test_beyond_the_guarantee_is_borrowed_and_reclaims_nothing(
    setup: tuple[BookingManager, OrgStore],
) -> None:
    m, _ = setup
    other = book(m, CY, None, 4, 2)
    over = book(m, ANN, None, 1, 2)  # fits in the free two: within acme's 2
    assert over["borrowed"] is False
    with pytest.raises(LedgerError) as info:
        book(m, ANN, None, 1, 1)  # a third GPU: beyond the guarantee, nothing is reclaimed
    assert info.value.kind == "conflict"
    assert m.get(Caller("root", admin=True), other["id"])["end"] == NOW + 4 * H


def test_when_reclaim_cannot_make_room_nothing_is_cut(
    setup: tuple[BookingManager, OrgStore],
) -> None:
    m, orgs = setup
    orgs.set_guarantees("beta", {"H100": 2}, {"H100": 4})
    guaranteed = book(m, BOB, None, 4, 2)  # beta's own two
    borrowed = book(m, CY, None, 4, 1)
    book(m, ANN, None, 4, 1)  # acme: one of its two, within
    with pytest.raises(LedgerError):
        book(m, ANN, None, 4, 2)  # 3 > 2: borrowed, so no reclaim
    assert m.get(Caller("root", admin=True), borrowed["id"])["end"] == NOW + 4 * H
    assert m.get(Caller("root", admin=True), guaranteed["id"])["end"] == NOW + 4 * H


def test_guarantees_cannot_promise_more_than_the_site_has(
    setup: tuple[BookingManager, OrgStore],
) -> None:
    _, orgs = setup
    with pytest.raises(Exception, match="at most 1 are left"):
        orgs.set_guarantees("gamma", {"H100": 2}, {"H100": 4})
    orgs.set_guarantees("gamma", {"H100": 1}, {"H100": 4})
    assert orgs.guarantees("gamma") == {"H100": 1}


def test_changes_decide_borrowed_anew(setup: tuple[BookingManager, OrgStore]) -> None:
    """Extending or moving a booking decides borrowed or not for its new times, as a whole:
    into time where its organisation already holds its guarantee it becomes borrowed, out
    of it guaranteed again; the change's audit entry says which."""
    m, _ = setup
    first = book(m, ANN, NOW + H, 2, 2)  # acme's guarantee of 2, from 09:00 to 11:00
    later = book(m, ANN, NOW + 3 * H, 1, 1)  # 11:00 to 12:00: within
    assert not first["borrowed"] and not later["borrowed"]
    longer = m.change(ANN, later["id"], (), start=NOW + 2 * H)  # now overlaps the two
    assert longer["borrowed"] is True
    assert longer["audit"][-1]["action"] == "change"
    assert longer["audit"][-1]["detail"]["borrowed"] is True
    back = m.change(ANN, later["id"], (), start=NOW + 3 * H, end=NOW + 5 * H)
    assert back["borrowed"] is False
    # extending the end into the other booking's time makes the first one borrowed
    moved = m.change(ANN, first["id"], (), end=NOW + 4 * H)
    assert moved["borrowed"] is True


def test_waitlist_grants_are_borrowed_beyond_the_guarantee(
    setup: tuple[BookingManager, OrgStore],
) -> None:
    m, _ = setup
    root = Caller("root", admin=True)
    held = book(m, BOB, NOW + 2 * H, 2, 1)  # beta's one, within its guarantee, from 10:00
    blocker = book(m, CY, None, 3, 3)  # gamma borrows the other three until 11:00
    assert blocker["borrowed"] and not held["borrowed"]
    # beta queues for two more from 10:00 (beyond its guarantee of 1) and acme for one
    # (within its 2); both are granted when gamma's booking is released early
    latest = NOW + 2 * H + timedelta(minutes=30)
    over = m.enqueue(BOB, "bob", "H100", 2, NOW + 2 * H, H, latest)
    within = m.enqueue(ANN, "ann", "H100", 1, NOW + 2 * H, H, latest)
    assert over["state"] == within["state"] == "waiting"
    m.release(CY, blocker["id"])
    entries = {e["user"]: e for e in m.waitlist(root)}
    assert entries["bob"]["state"] == "granted" and entries["ann"]["state"] == "granted"
    assert m.get(root, entries["bob"]["booking_id"])["borrowed"] is True
    assert m.get(root, entries["ann"]["booking_id"])["borrowed"] is False
    told = [n for n in m.notifications("bob") if n["kind"] == "waitlist_granted"]
    assert told and "borrowed" in told[-1]["message"]
