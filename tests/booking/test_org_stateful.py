"""Stateful property test of organisations in the ledger, on a real database (SQLite and
PostgreSQL): three organisations with guarantees and a monthly budget, a person outside
every organisation, and random creates, changes, cancels and releases while the clock
moves, moves of starts and waitlist requests granted as devices come free. After every
step: no unit is promised twice, no organisation exceeds its budget in any month, only
borrowed bookings are ever reclaimed, every reclaim is in the audit trail and told to its
holder, a booking within its guarantee is refused only when even reclaiming every borrowed
booking in its way would not make room, and every booking written in the step (created,
changed or granted from the waitlist) is marked borrowed exactly when it goes beyond its
organisation's guarantee at its times (outside every organisation: always, as guarantees
of the type exist)."""

from __future__ import annotations

import contextlib
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select

from tests.conftest import reset_postgres
from tests.support.budget import examples
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError, Unit
from werkhub.booking.manager import BookingManager, Caller, Settings
from werkhub.booking.quota import Policy, PolicySet
from werkhub.booking.tables import audit, booking_units, bookings, notifications
from werkhub.db import make_engines, upgrade
from werkhub.orgs.store import OrgStore

START = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)  # close to a month's end in Berlin
BERLIN = ZoneInfo("Europe/Berlin")
UNITS = tuple(Unit(id=f"n/{i}", node="n", gpu_type="H100", index=i) for i in range(4))
ORGS = {"acme": (2, 12.0), "beta": (1, None), "gamma": (0, 8.0)}
PEOPLE = {"ann": "acme", "al": "acme", "bob": "beta", "cy": "gamma", "zed": None}
ADMIN = Caller("root", admin=True)
_COUNTER = itertools.count()


def machine_for(db_url: str) -> type[RuleBasedStateMachine]:
    class OrgLedger(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.now = START
            ledger.utcnow = lambda: self.now  # type: ignore[assignment]
            url = db_url
            if url.startswith("sqlite"):
                url = db_url.replace(".sqlite", f"-{next(_COUNTER)}.sqlite")
            else:
                reset_postgres(url)
            upgrade(url)
            self.writer, self.reader = make_engines(url)
            policies = PolicySet(default=Policy(max_booking_hours=24, max_concurrent_gpus=4))
            self.m = BookingManager(
                self.writer, self.reader, Settings(UNITS, policies, BERLIN, warn_minutes=15)
            )
            orgs = OrgStore(self.writer, self.reader)
            for slug, (guarantee, budget) in ORGS.items():
                orgs.create(slug, slug, [f"org-{slug}"])
                orgs.change(slug, {"budget_gpu_hours": budget})
                orgs.set_guarantees(slug, {"H100": guarantee}, {"H100": 4})
            for user, slug in PEOPLE.items():
                if slug:
                    orgs.put_member(slug, user, admin=False)
            self.ids: list[int] = []

        def teardown(self) -> None:
            if hasattr(self, "writer"):
                self.writer.dispose()
                self.reader.dispose()

        @rule(
            user=st.sampled_from(sorted(PEOPLE)),
            offset=st.integers(0, 16),
            hours=st.integers(1, 6),
            count=st.integers(1, 3),
        )
        def book(self, user: str, offset: int, hours: int, count: int) -> None:
            start = (
                None
                if offset == 0
                else ledger.floor_minute(self.now) + offset * 15 * (timedelta(minutes=1))
            )
            before = self._ends()
            try:
                made, _ = self.m.create(
                    Caller(user), user, (), "H100", count, start, None, timedelta(hours=hours)
                )
            except LedgerError as exc:
                if exc.kind == "conflict":
                    self._refused_only_when_reclaim_cannot_help(user, count, start, hours)
                return
            self.ids.append(made["id"])
            if made["borrowed"]:
                # a borrowed booking reclaims nothing
                assert self._ends() == {**before, made["id"]: made["end"]}
            self._flags_right(set(before), made["id"])

        def _refused_only_when_reclaim_cannot_help(
            self, user: str, count: int, start: datetime | None, hours: int
        ) -> None:
            slug = PEOPLE[user]
            if slug is None or ORGS[slug][0] == 0:
                return
            begin = ledger.floor_minute(self.now) if start is None else start
            later = max(begin, ledger.floor_minute(self.now) + timedelta(minutes=15))
            window = (later, later + timedelta(hours=hours))
            held = self._holding(window)
            mine = sum(c for u, c, _ in held if PEOPLE.get(u) == slug)
            if mine + count > ORGS[slug][0]:
                return  # beyond the guarantee: borrowed, no reclaim
            others_fixed = sum(
                c for u, c, borrowed in held if PEOPLE.get(u) != slug and not borrowed
            )
            # room even without every borrowed booking of others: the refusal must be
            # for another reason (the budget) or a fragmented timeline
            assert mine + others_fixed + count > len(UNITS) or ORGS[slug][1] is not None

        def _holding(self, window: tuple[datetime, datetime]) -> list[tuple[str, int, bool]]:
            lo, hi = window
            found = []
            for b in self.m.list(ADMIN, limit=1000):
                if b["state"] in ("booked", "active") and b["start"] < hi and b["end"] > lo:
                    found.append((b["user"], b["count"], b["borrowed"]))
            return found

        def _ends(self) -> dict[int, datetime]:
            return {b["id"]: b["end"] for b in self.m.list(ADMIN, limit=1000)}

        @rule(index=st.integers(0, 1000))
        def cancel_or_release(self, index: int) -> None:
            if not self.ids:
                return
            booking = self.m.get(ADMIN, self.ids[index % len(self.ids)])
            owner = Caller(booking["user"])
            before = set(self._ends())
            with (
                pytest.raises(LedgerError)
                if booking["state"] not in ("booked", "active")
                else (_nothing())
            ):
                if booking["start"] > self.now:
                    self.m.cancel(owner, booking["id"])
                else:
                    self.m.release(owner, booking["id"])
            self._flags_right(before, None)

        @rule(index=st.integers(0, 1000), hours=st.integers(-2, 3))
        def change_end(self, index: int, hours: int) -> None:
            if not self.ids or hours == 0:
                return
            booking = self.m.get(ADMIN, self.ids[index % len(self.ids)])
            before = set(self._ends())
            with contextlib.suppress(LedgerError):
                self.m.change(
                    Caller(booking["user"]),
                    booking["id"],
                    (),
                    end=booking["end"] + hours * (timedelta(hours=1)),
                )
                self._flags_right(before, booking["id"])

        @rule(index=st.integers(0, 1000), quarters=st.integers(-4, 8))
        def move_start(self, index: int, quarters: int) -> None:
            if not self.ids or quarters == 0:
                return
            booking = self.m.get(ADMIN, self.ids[index % len(self.ids)])
            shift = quarters * timedelta(minutes=15)
            before = set(self._ends())
            with contextlib.suppress(LedgerError):
                self.m.change(
                    Caller(booking["user"]),
                    booking["id"],
                    (),
                    start=booking["start"] + shift,
                    end=booking["end"] + shift,
                )
                self._flags_right(before, booking["id"])

        @rule(
            user=st.sampled_from(sorted(PEOPLE)),
            hours=st.integers(1, 4),
            count=st.integers(1, 3),
            patience=st.sampled_from([1, 4, 12]),
        )
        def wait(self, user: str, hours: int, count: int, patience: int) -> None:
            """Queue a request; it is granted now or whenever a later step frees devices."""
            before = set(self._ends())
            with contextlib.suppress(LedgerError):
                self.m.enqueue(
                    Caller(user),
                    user,
                    "H100",
                    count,
                    self.now,
                    timedelta(hours=hours),
                    self.now + timedelta(hours=patience),
                )
            self._flags_right(before, None)

        def _flags_right(self, before: set[int], changed: int | None) -> None:
            """Bookings new since ``before`` (created or granted, in id order) and the one
            ``changed`` are borrowed exactly when they exceed their organisation's guarantee
            among the organisation's bookings as they stood when each was written."""
            everything = {b["id"]: b for b in self.m.list(ADMIN, limit=1000)}
            new = sorted(set(everything) - before)
            self.ids += [i for i in new if i not in self.ids]
            for booking_id in ([changed] if changed is not None else []) + new:
                b = everything[booking_id]
                if b["state"] not in ("booked", "active"):
                    continue
                later = {i for i in new if i > booking_id or booking_id == changed}
                slug = PEOPLE.get(b["user"])
                if slug is None:
                    assert b["borrowed"], f"booking {booking_id} outside organisations"
                    continue
                mine = [
                    o
                    for o in everything.values()
                    if o["id"] != booking_id
                    and o["id"] not in later
                    and o["state"] in ("booked", "active")
                    and PEOPLE.get(o["user"]) == slug
                ]
                expected = _peak(mine, b["start"], b["end"]) + b["count"] > ORGS[slug][0]
                assert b["borrowed"] == expected, (b, mine)

        @rule(minutes=st.sampled_from([5, 15, 45, 120]))
        def advance(self, minutes: int) -> None:
            self.now += timedelta(minutes=minutes)

        @invariant()
        def no_unit_promised_twice(self) -> None:
            if not hasattr(self, "reader"):
                return
            with self.reader.connect() as conn:
                held = conn.execute(
                    select(booking_units.c.unit, booking_units.c.start_min, booking_units.c.end_min)
                    .where(booking_units.c.holding.is_(True))
                    .order_by(booking_units.c.unit, booking_units.c.start_min)
                ).all()
            for a, b in itertools.pairwise(held):
                if a.unit == b.unit:
                    assert a.end_min <= b.start_min, (a, b)

        @invariant()
        def budgets_hold(self) -> None:
            if not hasattr(self, "m"):
                return
            spent: dict[tuple[str, str], float] = {}
            for b in self.m.list(ADMIN, limit=1000):
                slug = PEOPLE.get(b["user"])
                if slug is None or b["state"] == "cancelled":
                    continue
                moment = b["start"]
                while moment < b["end"]:
                    month = moment.astimezone(BERLIN).strftime("%Y-%m")
                    key = (slug, month)
                    spent[key] = spent.get(key, 0.0) + b["count"] / 60
                    moment += timedelta(minutes=1)
            for (slug, month), hours in spent.items():
                budget = ORGS[slug][1]
                assert budget is None or hours <= budget + 1e-6, (slug, month, hours)

        @invariant()
        def only_borrowed_bookings_are_reclaimed_and_told(self) -> None:
            if not hasattr(self, "reader"):
                return
            with self.reader.connect() as conn:
                cut = conn.execute(
                    select(audit.c.booking_id, bookings.c.borrowed, bookings.c.user)
                    .join(bookings, bookings.c.id == audit.c.booking_id)
                    .where(audit.c.action == "reclaim")
                ).all()
                told = set(
                    conn.execute(
                        select(notifications.c.booking_id).where(notifications.c.kind == "reclaim")
                    ).scalars()
                )
            for booking_id, borrowed, _ in cut:
                assert borrowed, f"booking {booking_id} was reclaimed but not borrowed"
                assert booking_id in told

    return OrgLedger


def _peak(others: list[dict], lo: datetime, hi: datetime) -> int:
    """The most GPUs ``others`` hold at once within [lo, hi) (the peak is at ``lo`` or at
    one of their starts)."""
    moments = [lo] + [o["start"] for o in others if lo < o["start"] < hi]
    return max(sum(o["count"] for o in others if o["start"] <= t < o["end"]) for t in moments)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_organisations_in_the_ledger_keep_every_rule(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "utcnow", ledger.utcnow)  # restored after the machine
    machine = machine_for(db_url)
    machine.TestCase.settings = settings(
        max_examples=examples(6),
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    machine.TestCase().runTest()
