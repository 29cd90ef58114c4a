"""A federation run's GPU bookings on the real ledger (SQLite and PostgreSQL): booked in
the party's own name when the run starts, extended while the run goes on, and a refused
extension ends the run's claim with a sentence that names the organisation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.booking.test_manager import ADMIN, NOW, UNITS, Clock
from werkhub.booking.manager import BookingManager, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.db import make_engines, upgrade
from werkhub.federation.supervisor import BOOKING_MINUTES, EXTEND_BEFORE, FederationSupervisor

FED = {"id": 1, "parties": [{"org": "acme", "user": "alice", "gpus": 1, "state": "accepted"}]}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def manager(db_url: str, clock: Clock) -> Iterator[BookingManager]:
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    # bookings of at most 8 hours: a run's first extension (4 h -> 8 h) fits, the second not
    policies = PolicySet(
        default=Policy(gpu_hours_per_week=40, max_booking_hours=8, max_concurrent_gpus=2)
    )
    yield BookingManager(writer, reader, Settings(UNITS, policies, ZoneInfo("Europe/Berlin")))
    writer.dispose()
    reader.dispose()


def supervisor(manager: BookingManager) -> FederationSupervisor:
    # the booking part of the supervisor needs only the ledger
    return FederationSupervisor(store=None, runtime=None, options=None, bookings=manager)  # type: ignore[arg-type]


def test_a_runs_booking_is_extended_while_it_goes_on_and_a_refusal_names_the_party(
    manager: BookingManager, clock: Clock
) -> None:
    sup = supervisor(manager)
    booking = asyncio.run(sup._book_one(FED["parties"][0]))
    assert booking["user"] == "alice" and booking["start"] == NOW
    first_end = NOW + timedelta(minutes=BOOKING_MINUTES)
    assert booking["end"] == first_end
    run = {"bookings": {"acme": booking["id"]}}

    # long before its end: nothing changes
    clock.advance(timedelta(minutes=BOOKING_MINUTES) - 2 * EXTEND_BEFORE)
    assert asyncio.run(sup.extend_bookings(FED, run)) is None
    assert manager.get(ADMIN, booking["id"])["end"] == first_end

    # within EXTEND_BEFORE of its end: extended by BOOKING_MINUTES, same devices
    clock.advance(EXTEND_BEFORE + timedelta(minutes=5))
    assert asyncio.run(sup.extend_bookings(FED, run)) is None
    extended = manager.get(ADMIN, booking["id"])
    assert extended["end"] == first_end + timedelta(minutes=BOOKING_MINUTES)
    assert extended["devices"] == booking["devices"]

    # the next extension would pass the policy's 8 hours: refused with a sentence
    clock.advance(timedelta(minutes=BOOKING_MINUTES))
    refused = asyncio.run(sup.extend_bookings(FED, run))
    assert refused is not None and "at most 8 h" in refused, refused
    assert "organisation 'acme'" in refused and "could not be extended" in refused
    assert manager.get(ADMIN, booking["id"])["end"] == extended["end"]  # nothing half-done


def test_a_run_without_bookings_is_left_alone(manager: BookingManager) -> None:
    assert asyncio.run(supervisor(manager).extend_bookings(FED, {"bookings": {}})) is None
