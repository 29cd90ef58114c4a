"""Pure booking rules: overlap, device choice, free slots, waitlist order, no-shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.budget import examples
from werkhub.booking import ledger
from werkhub.booking.ledger import LedgerError, Slot, State, Unit

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)

UNITS = [
    Unit(id="a/0", node="a", gpu_type="H100", index=0),
    Unit(id="a/1", node="a", gpu_type="H100", index=1),
    Unit(id="a/2", node="a", gpu_type="H100", index=2),
    Unit(id="b/0", node="b", gpu_type="H100", index=0),
    Unit(id="b/1", node="b", gpu_type="H100", index=1),
    Unit(id="b/2/1g.10gb-0", node="b", gpu_type="H100:1g.10gb", index=200),
]


def slot(
    i: int,
    devices: tuple[str, ...],
    start: datetime,
    end: datetime,
    state: State = State.BOOKED,
    user: str = "u",
    gpu_type: str = "H100",
) -> Slot:
    return Slot(
        id=i,
        user=user,
        gpu_type=gpu_type,
        count=len(devices),
        start=start,
        end=end,
        devices=devices,
        state=state,
    )


def test_half_open_intervals() -> None:
    assert ledger.overlaps(T0, T0 + H, T0 + H / 2, T0 + 2 * H)
    assert not ledger.overlaps(T0, T0 + H, T0 + H, T0 + 2 * H)  # touching is fine
    assert not ledger.overlaps(T0 + H, T0 + 2 * H, T0, T0 + H)


def test_minutes_and_offsets() -> None:
    berlin = datetime(2026, 11, 23, 9, 0, 42, tzinfo=UTC).astimezone()
    assert ledger.floor_minute(berlin) == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert ledger.ceil_minute(T0 + timedelta(seconds=1)) == T0 + timedelta(minutes=1)
    assert ledger.ceil_minute(T0) == T0
    with pytest.raises(LedgerError, match="UTC offset"):
        ledger.floor_minute(datetime(2026, 1, 1))
    with pytest.raises(LedgerError, match="end must be after start"):
        ledger.check_interval(T0, T0)
    with pytest.raises(LedgerError, match="at most 31 days"):
        ledger.check_interval(T0, T0 + timedelta(days=32))


def test_devices_stay_on_one_node_best_fit() -> None:
    # node a has 3 free, node b 2: a request for 2 goes to b (best fit keeps a whole)
    assert ledger.choose_devices(UNITS, [], "H100", 2, T0, T0 + H) == ("b/0", "b/1")
    assert ledger.choose_devices(UNITS, [], "H100", 3, T0, T0 + H) == ("a/0", "a/1", "a/2")
    assert ledger.choose_devices(UNITS, [], "H100", 4, T0, T0 + H) is None  # never split


def test_busy_units_are_skipped_and_other_states_ignored() -> None:
    slots = [
        slot(1, ("b/0",), T0, T0 + H),
        slot(2, ("a/0", "a/1", "a/2"), T0, T0 + H, state=State.CANCELLED),
        slot(3, ("b/1",), T0 + H, T0 + 2 * H),  # after: does not block
    ]
    assert ledger.choose_devices(UNITS, slots, "H100", 2, T0, T0 + H) == ("a/0", "a/1")
    assert ledger.choose_devices(UNITS, slots, "H100", 1, T0, T0 + H) == ("b/1",)


def test_extension_keeps_devices_when_free() -> None:
    slots = [slot(1, ("a/2",), T0, T0 + H)]
    chosen = ledger.choose_devices(
        UNITS, slots, "H100", 1, T0, T0 + 2 * H, prefer=("a/2",), ignore=1
    )
    assert chosen == ("a/2",)
    slots.append(slot(2, ("a/2",), T0 + H, T0 + 2 * H, user="v"))
    moved = ledger.choose_devices(
        UNITS, slots, "H100", 1, T0, T0 + 2 * H, prefer=("a/2",), ignore=1
    )
    assert moved is not None and moved != ("a/2",)


def test_earliest_slot_is_the_first_end_that_fits() -> None:
    full = [slot(1, ("a/0", "a/1", "a/2"), T0, T0 + 2 * H), slot(2, ("b/0", "b/1"), T0, T0 + 3 * H)]
    found = ledger.earliest_slot(UNITS, full, "H100", 2, H, T0, T0 + timedelta(days=1))
    assert found == (T0 + 2 * H, ("a/0", "a/1"))
    assert ledger.earliest_slot(UNITS, full, "H100", 2, H, T0, T0 + H) is None


def test_free_counts_per_step() -> None:
    slots = [slot(1, ("a/0", "a/1"), T0, T0 + H), slot(2, ("b/0",), T0 + H / 2, T0 + 2 * H)]
    steps = ledger.free_counts(UNITS, slots, "H100", T0, T0 + 3 * H, H)
    assert steps == [(T0, 2), (T0 + H, 4), (T0 + 2 * H, 5)]
    with pytest.raises(LedgerError, match="too many steps"):
        ledger.free_counts(UNITS, [], "H100", T0, T0 + timedelta(days=30), timedelta(minutes=1))


def test_waitlist_served_in_order_and_each_grant_counts() -> None:
    busy = [slot(1, ("a/0", "a/1", "a/2"), T0, T0 + H), slot(2, ("b/0", "b/1"), T0, T0 + H)]
    entries = [
        ledger.WaitEntry(
            id=2,
            user="late",
            gpu_type="H100",
            count=3,
            duration=H,
            not_before=T0,
            latest_start=T0 + 4 * H,
        ),
        ledger.WaitEntry(
            id=1,
            user="early",
            gpu_type="H100",
            count=3,
            duration=2 * H,
            not_before=T0,
            latest_start=T0 + 4 * H,
        ),
        ledger.WaitEntry(
            id=3,
            user="never",
            gpu_type="H100",
            count=2,
            duration=H,
            not_before=T0,
            latest_start=T0 + H / 2,
        ),
    ]
    granted = ledger.serve_waitlist(entries, UNITS, busy, T0)
    assert [(e.user, start) for e, start, _ in granted] == [("early", T0 + H), ("late", T0 + 3 * H)]
    assert [e.id for e in ledger.expired_waits(entries, T0 + H)] == [3]


def test_no_show_activation_and_end() -> None:
    slots = [
        slot(1, ("a/0",), T0, T0 + 2 * H, user="idle"),
        slot(2, ("a/1",), T0, T0 + 2 * H, user="busy"),
        slot(3, ("a/2",), T0 + H, T0 + 2 * H, user="idle"),
    ]
    now = T0 + timedelta(minutes=15)
    assert [s.id for s in ledger.no_shows(slots, now, 15, running={"busy"})] == [1]
    assert [s.id for s in ledger.no_shows(slots, now - timedelta(minutes=1), 15, set())] == []
    assert [s.id for s in ledger.activations(slots, now, running={"busy"})] == [2]
    assert [s.id for s in ledger.finished(slots, T0 + 2 * H)] == [1, 2, 3]


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(-50, 400), st.integers(1, 200)),
        max_size=40,
    ),
    st.integers(0, 100),
    st.integers(1, 300),
    st.integers(1, 90),
)
def test_busy_per_step_counts_each_unit_once_per_step(
    raw: list[tuple[str, int, int]], lo: int, span: int, step: int
) -> None:
    """Against counting by brute force: a unit is busy in a step when any of its intervals
    shares a moment with it (overlapping and touching intervals of one unit included)."""
    intervals = [(unit, start, start + length) for unit, start, length in raw]
    hi = lo + span
    expected = []
    for first in range(lo, hi, step):
        last = min(first + step, hi)
        busy = {u for u, s, e in intervals if s < last and first < e}
        expected.append(len(busy))
    assert ledger.busy_per_step(intervals, lo, hi, step) == expected


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(st.integers(1, 8), min_size=1, max_size=12),
    st.sets(st.integers(0, 95)),
    st.integers(1, 8),
)
def test_type_pool_best_fit_is_the_plain_rule(
    sizes: list[int], busy_picks: set[int], count: int
) -> None:
    """TypePool.best_fit (built once, looks at busy nodes only) against the rule written
    out: among nodes with at least ``count`` free units, the fewest free, then the node's
    name; its free units lowest index first."""
    units = [
        Unit(id=f"n{k:02d}/{i}", node=f"n{k:02d}", gpu_type="X", index=i)
        for k, size in enumerate(sizes)
        for i in range(size)
    ]
    busy = {units[p % len(units)].id for p in busy_picks}
    free: dict[str, list[Unit]] = {}
    for unit in units:
        if unit.id not in busy:
            free.setdefault(unit.node, []).append(unit)
    fitting = [(len(us), node) for node, us in free.items() if len(us) >= count]
    expected = None
    if fitting:
        node = min(fitting)[1]
        expected = tuple(u.id for u in sorted(free[node], key=lambda u: u.index)[:count])
    assert ledger.TypePool(units).best_fit(busy, count) == expected
