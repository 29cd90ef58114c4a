"""An organisation's GPU-hour budget in the ledger, on SQLite and PostgreSQL: creates,
changes and waitlist grants past the budget are refused with what is left, releases give
hours back, a booking across a month's end counts in both months, other organisations and
people outside every organisation are not affected, and racing members never exceed it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.orgs import book, ledger_with_orgs
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError, Unit
from werkhub.booking.manager import BookingManager, Caller
from werkhub.orgs.store import OrgStore

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # the month's last day, 09:00 in Berlin
H = timedelta(hours=1)
UNITS = tuple(Unit(id=f"n/{i}", node="n", gpu_type="H100", index=i) for i in range(8))
ANN, AL, BOB, ZED = Caller("ann"), Caller("al"), Caller("bob"), Caller("zed")


@pytest.fixture
def setup(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BookingManager, OrgStore]]:
    monkeypatch.setattr(ledger, "utcnow", lambda: NOW)
    with ledger_with_orgs(db_url, UNITS, {"ann": "acme", "al": "acme", "bob": "beta"}) as (
        manager,
        orgs,
    ):
        orgs.change("acme", {"budget_gpu_hours": 10.0})
        yield manager, orgs


def test_members_share_the_budget_and_releases_give_back(
    setup: tuple[BookingManager, OrgStore],
) -> None:
    m, _ = setup
    book(m, ANN, NOW + H, 3, count=2)  # 6 GPU-hours of 10
    with pytest.raises(LedgerError) as info:
        book(m, AL, NOW + H, 5)  # another member: the organisation's budget
    assert info.value.kind == "policy" and "4.0 of its 10 GPU-hours left" in info.value.message
    assert "November 2026" in info.value.message
    book(m, AL, NOW + H, 4)
    # other organisations and people outside every organisation are not limited by it
    book(m, BOB, NOW + H, 10)
    book(m, ZED, NOW + H, 10)
    # a release gives back what was not used
    now_booking = book(m, BOB, NOW, 1)
    assert now_booking["state"] == "booked"


def test_changes_and_month_ends(setup: tuple[BookingManager, OrgStore]) -> None:
    m, _ = setup
    first = book(m, ANN, NOW + H, 4)
    with pytest.raises(LedgerError, match="GPU-hours left"):
        m.change(ANN, first["id"], (), end=NOW + 12 * H)  # 11 h: past the budget
    m.change(ANN, first["id"], (), end=NOW + 11 * H)  # 10 h: exactly the budget
    # the month is full; tomorrow is December: a booking across midnight counts only its
    # December hours there, but its November hours here, so it is refused
    midnight = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 00:00 in Berlin
    with pytest.raises(LedgerError, match="November 2026"):
        book(m, AL, midnight - 2 * H, 4)
    december = book(m, AL, midnight, 8)
    assert december["start"] == midnight
    # shortening gives the hours back
    m.change(ANN, first["id"], (), end=NOW + 6 * H)
    book(m, AL, NOW + 2 * H, 5)


def test_waitlist_grants_respect_the_budget(setup: tuple[BookingManager, OrgStore]) -> None:
    m, _ = setup
    book(m, ANN, NOW + H, 8)
    blocker = book(m, BOB, NOW + H, 2, count=7)  # with ann's, every GPU for two hours
    entry = m.enqueue(AL, "al", "H100", 1, NOW + H, 4 * H, NOW + 2 * H)
    assert entry["state"] == "waiting"
    m.cancel(Caller("bob"), blocker["id"])  # GPUs free, but only 2 of acme's hours are left
    waiting = {e["id"]: e for e in m.waitlist(AL, "al")}
    assert waiting[entry["id"]]["state"] == "waiting"


def test_racing_members_never_exceed_the_budget(setup: tuple[BookingManager, OrgStore]) -> None:
    m, orgs = setup
    orgs.put_member("acme", "zed", admin=False)
    people = [ANN, AL, ZED] * 4
    won: list[dict] = []
    lock = threading.Lock()

    def attempt(who: Caller, offset: int) -> None:
        try:
            booking = book(m, who, NOW + (offset + 1) * H, 3)
        except LedgerError:
            return
        with lock:
            won.append(booking)

    threads = [threading.Thread(target=attempt, args=(w, i % 4)) for i, w in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(b["count"] * 3 for b in won) <= 10
    assert len(won) == 3  # 9 of 10 hours: a fourth 3-hour booking never fits
