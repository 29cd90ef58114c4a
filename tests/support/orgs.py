"""A booking ledger on a real database with organisations in it, for the ledger tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from werkhub.booking.ledger import Unit
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.db import make_engines, upgrade
from werkhub.orgs.store import OrgStore

BERLIN = ZoneInfo("Europe/Berlin")


@contextmanager
def ledger_with_orgs(
    db_url: str, units: tuple[Unit, ...], members: Mapping[str, str], warn_minutes: int = 15
) -> Iterator[tuple[BookingManager, OrgStore]]:
    """The ledger (Berlin time, generous policies) and organisations named by ``members``
    (user -> slug), each person a plain member."""
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    policies = PolicySet(default=Policy(max_booking_hours=48, max_concurrent_gpus=len(units)))
    settings = Settings(units, policies, BERLIN, warn_minutes=warn_minutes)
    orgs = OrgStore(writer, reader)
    for slug in sorted(set(members.values())):
        orgs.create(slug, slug.upper(), [f"org-{slug}"])
    for user, slug in members.items():
        orgs.put_member(slug, user, admin=False)
    try:
        yield BookingManager(writer, reader, settings), orgs
    finally:
        writer.dispose()
        reader.dispose()


def book(
    m: BookingManager, who: Caller, start: datetime | None, hours: float, count: int = 1
) -> dict:
    """``count`` H100 for ``hours`` from ``start`` (None: now) as ``who``."""
    booking, _ = m.create(who, who.name, (), "H100", count, start, None, hours * timedelta(hours=1))
    return booking
