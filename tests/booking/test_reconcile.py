"""The service's check for deletions it was not told about (service/users.py reconcile),
on a real ledger: a person who signs up and books while the hub's user list is being read
is not taken for a deleted account, and a deleted one with a live booking still is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.booking.test_manager import NOW, book, clock, manager  # noqa: F401 (fixtures)
from werkhub.booking.manager import BookingManager, Caller
from werkhub.service import users

CREATED = "2026-11-23T07:00:00.000000Z"


class HubList:
    """The hub's accounts as the service reads them (name -> creation time, ISO 8601).
    ``during`` runs while the list is being read: the moment someone signs up and books."""

    def __init__(self, accounts: dict[str, str], during: Callable[[], None] | None = None):
        self.accounts = accounts
        self.during = during

    async def users_created(self) -> dict[str, str]:
        listed = dict(self.accounts)
        if self.during is not None:
            self.during, during = None, self.during
            during()
        return listed

    def forget(self, name: str) -> None:
        pass


def test_signing_up_and_booking_during_the_check_is_not_a_deletion(
    manager: BookingManager,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    purged: list[tuple[str, Any]] = []

    async def record(app: Any, name: str, before: float | None = None) -> None:
        purged.append((name, before))

    monkeypatch.setattr(users, "purge", record)

    def sign_up_and_book() -> None:
        hub.accounts["dora"] = NOW.isoformat().replace("+00:00", "Z")
        book(manager, Caller("dora"), None)

    hub = HubList({"alice": CREATED}, during=sign_up_and_book)
    app = SimpleNamespace(state=SimpleNamespace(auth=hub, bookings=manager, jobs=None))
    accounts = tmp_path / "accounts.json"
    assert asyncio.run(users.reconcile(app, accounts)) == []
    assert purged == []  # dora's booking is hers, not a missed deletion
    assert asyncio.run(users.reconcile(app, accounts)) == []  # and stays so
    hub.accounts.pop("dora")  # deleted on the hub without telling the service
    assert asyncio.run(users.reconcile(app, accounts)) == ["dora"]
    assert purged == [("dora", None)]


def test_a_deletion_the_service_handled_is_not_purged_again_when_the_name_returns(
    manager: BookingManager,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hub tells the service about a deletion before it removes the account from its
    own list; a check that reads the list in between, and a name created again soon after,
    must not make the new person's account look like one deleted behind the service's back
    (that purge deleted the new person's MLflow account)."""
    purged: list[tuple[str, Any]] = []

    async def record(app: Any, name: str, before: float | None = None) -> None:
        purged.append((name, before))

    monkeypatch.setattr(users, "purge", record)
    old, new = CREATED, "2026-11-23T07:30:00.000000Z"
    accounts = tmp_path / "accounts.json"
    users.save_accounts(accounts, {"alice": CREATED, "dan": users.PURGED + old})
    hub = HubList({"alice": CREATED, "dan": old})  # the hub still lists the deleted dan
    app = SimpleNamespace(state=SimpleNamespace(auth=hub, bookings=manager, jobs=None))
    assert asyncio.run(users.reconcile(app, accounts)) == []
    assert users.load_accounts(accounts)["dan"] == users.PURGED + old  # still marked
    hub.accounts["dan"] = new  # the name is created again
    assert asyncio.run(users.reconcile(app, accounts)) == []
    assert purged == [] and users.load_accounts(accounts)["dan"] == new
    # without the service being told, the same change is a missed deletion: purged
    users.save_accounts(accounts, {"alice": CREATED, "erin": old})
    hub.accounts["erin"] = new
    assert asyncio.run(users.reconcile(app, accounts)) == ["erin"]
    assert purged == [("erin", users.epoch(new))]
