"""The fair order of the job queue (``werkhub.jobs.fairness``): examples and property tests
of a simulated queue in which runs arrive, start and finish in random order."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.budget import examples
from werkhub.jobs.fairness import Waiting, fair_pick


def flood(owner: str, count: int, first_id: int = 1, at: float = 0.0) -> list[Waiting]:
    return [Waiting(first_id + i, owner, at) for i in range(count)]


def test_a_later_owner_gets_the_next_slot_after_a_flood() -> None:
    queue = [*flood("ann", 1000), Waiting(5000, "ben", 10.0)]
    # ann has one run going and was served last: ben's run is next, not ann's 1000
    picked = fair_pick(queue, {"ann": 1}, {"ann": 9.0}, free=1, per_owner=2)
    assert [p.owner for p in picked] == ["ben"]


def test_owners_take_turns_and_oldest_run_breaks_ties() -> None:
    queue = [*flood("ann", 5), Waiting(10, "ben", 3.0), Waiting(11, "ben", 4.0)]
    picked = fair_pick(queue, {}, {}, free=4, per_owner=5)
    # neither was served yet: ann's oldest run is older, so she starts, then they alternate
    assert [(p.owner, p.id) for p in picked] == [
        ("ann", 1),
        ("ben", 10),
        ("ann", 2),
        ("ben", 11),
    ]


def test_the_owner_served_longest_ago_goes_first() -> None:
    queue = [Waiting(1, "ann", 0.0), Waiting(2, "ben", 5.0), Waiting(3, "cem", 6.0)]
    last = {"ann": 100.0, "ben": 50.0}  # cem never ran anything
    picked = fair_pick(queue, {}, last, free=3, per_owner=1)
    assert [p.owner for p in picked] == ["cem", "ben", "ann"]


def test_limits_are_kept() -> None:
    queue = [*flood("ann", 10), *flood("ben", 10, first_id=100)]
    assert fair_pick(queue, {}, {}, free=0, per_owner=3) == []
    assert fair_pick(queue, {"ann": 3, "ben": 3}, {}, free=5, per_owner=3) == []
    picked = fair_pick(queue, {"ann": 2}, {}, free=5, per_owner=3)
    assert Counter(p.owner for p in picked) == {"ann": 1, "ben": 3}
    assert fair_pick([], {}, {}, free=5, per_owner=3) == []


def test_runs_of_one_owner_start_oldest_first() -> None:
    queue = [Waiting(7, "ann", 5.0), Waiting(3, "ann", 5.0), Waiting(9, "ann", 1.0)]
    assert [p.id for p in fair_pick(queue, {}, {}, free=3, per_owner=3)] == [9, 3, 7]


step = st.tuples(
    st.lists(st.sampled_from("abcd"), max_size=30),  # arrivals: one run per letter
    st.integers(0, 3),  # how many running runs finish before the pick
)


@settings(max_examples=examples(300), deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=40),
    capacity=st.integers(1, 4),
    per_owner=st.integers(1, 3),
    flood_size=st.integers(0, 300),
)
def test_no_owner_is_overtaken_twice_while_waiting(
    steps: list[tuple[list[str], int]], capacity: int, per_owner: int, flood_size: int
) -> None:
    """A simulated service: runs arrive (owner ``a`` floods first), some running ones
    finish, free slots are filled by ``fair_pick``. While an owner has a run waiting and
    is below ``per_owner``, no other owner starts two runs before it starts one: with
    two owners, a flood delays the other's run by one run slot at most."""
    waiting = flood("a", flood_size)
    next_id = flood_size + 1
    running: list[Waiting] = []
    last_start: dict[str, float] = {}
    # owner -> starts of others since it became eligible and waiting (reset on its start)
    overtaken: dict[str, Counter[str]] = {}
    stamp = 0.0  # each start has a time of its own, as ``started`` in the store
    for clock, (arrivals, finishing) in enumerate(steps, start=1):
        for owner in arrivals:
            waiting.append(Waiting(next_id, owner, float(clock)))
            next_id += 1
        running = running[finishing:]  # the oldest finish first; any order would do
        busy = Counter(r.owner for r in running)
        eligible = {w.owner for w in waiting if busy[w.owner] < per_owner}
        for owner in list(overtaken):
            if owner not in eligible:
                del overtaken[owner]  # at its limit or nothing waiting: not waiting for us
        for owner in eligible:
            overtaken.setdefault(owner, Counter())
        picked = fair_pick(
            waiting, busy, last_start, free=capacity - len(running), per_owner=per_owner
        )
        assert len(picked) <= capacity - len(running)
        for run in picked:
            waiting.remove(run)
            running.append(run)
            busy[run.owner] += 1
            assert busy[run.owner] <= per_owner
            stamp += 1
            last_start[run.owner] = stamp
            overtaken.pop(run.owner, None)
            for owner, others in overtaken.items():
                others[run.owner] += 1
                assert others[run.owner] <= 1, (
                    f"{run.owner} started twice while {owner} waited for a slot"
                )
        # work conserving: a free slot stays free only when nobody eligible waits
        still_free = capacity - len(running)
        if still_free > 0:
            busy_now = Counter(r.owner for r in running)
            assert not [w for w in waiting if busy_now[w.owner] < per_owner]
