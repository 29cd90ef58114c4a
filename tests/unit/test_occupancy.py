"""The in-memory occupancy of a GPU type answers availability exactly as merging every
span would (``ledger.busy_per_step``), whatever was put and dropped, for windows aligned
to their step (answered from per-day caches) and not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.budget import examples
from werkhub.booking.ledger import busy_per_step
from werkhub.booking.occupancy import DAY, TypeOccupancy, days_of
from werkhub.booking.rows import from_min, iso_steps

UNITS = ["a/0", "a/1", "b/0"]
STEPS = [1, 7, 15, 60, 90, 180, DAY]

span = st.tuples(
    st.sampled_from(UNITS),
    st.integers(0, 6 * DAY),
    st.integers(1, 3 * DAY),
)
# row ids from a small range: puts replace rows, drops hit rows that exist and rows that don't
change = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 40), span),
    st.tuples(st.just("drop"), st.integers(0, 40), st.none()),
)
window = st.tuples(st.integers(-DAY, 9 * DAY), st.integers(1, 4 * DAY), st.sampled_from(STEPS))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(change, max_size=60), st.lists(window, min_size=1, max_size=8), st.booleans())
def test_busy_matches_merging_every_span(changes, windows, align) -> None:
    occupancy = TypeOccupancy()
    truth: dict[int, tuple[str, int, int]] = {}
    for k, (kind, row, value) in enumerate(changes):
        if kind == "put":
            unit, start, length = value
            occupancy.put(row, unit, start, start + length)
            truth[row] = (unit, start, start + length)
        else:
            occupancy.drop(row)
            truth.pop(row, None)
        if k % 7 == 0:  # answers cached between changes must not outlive them
            occupancy.busy(0, 2 * DAY, 60)
    assert occupancy.spans == truth
    for lo, length, step in windows:
        if align:
            lo -= lo % step
            length = max(step, length - length % step)
        hi = lo + length
        assert occupancy.busy(lo, hi, step) == busy_per_step(truth.values(), lo, hi, step)


def test_spans_are_kept_by_every_day_they_touch() -> None:
    occupancy = TypeOccupancy()
    occupancy.put(1, "a/0", DAY - 30, 2 * DAY + 1)  # three days
    assert list(days_of(DAY - 30, 2 * DAY + 1)) == [0, 1, 2]
    assert occupancy.busy(0, 3 * DAY, DAY) == [1, 1, 1]
    assert occupancy.busy(2 * DAY, 3 * DAY, 60)[:2] == [1, 0]
    occupancy.put(1, "a/0", 0, 60)  # the same row, shorter: the later days forget it
    assert occupancy.busy(0, 3 * DAY, DAY) == [1, 0, 0]
    occupancy.drop(1)
    assert occupancy.busy(0, 3 * DAY, DAY) == [0, 0, 0] and len(occupancy) == 0


def test_a_unit_counts_once_per_step() -> None:
    occupancy = TypeOccupancy()
    occupancy.put(1, "a/0", 0, 15)
    occupancy.put(2, "a/0", 30, 45)  # the same unit again in the same hour
    occupancy.put(3, "a/1", 50, 70)  # another unit, into the next hour
    assert occupancy.busy(0, 120, 60) == [2, 1]
    assert occupancy.busy(0, 120, 30) == [1, 2, 1, 0]


@settings(max_examples=examples(200), deadline=None)
@given(st.integers(-(10**6), 10**8), st.sampled_from(STEPS), st.integers(0, 400))
def test_iso_steps_match_datetime_isoformat(first, step, count) -> None:
    expected = [from_min(first + i * step).isoformat() for i in range(count)]
    assert iso_steps(first, step, count) == expected
