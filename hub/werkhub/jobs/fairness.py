"""Fair order of the job queue between owners (pure: standard library only).

A free run slot goes to the owners in turn, not to the oldest run: among the owners who
have a run waiting and fewer than ``per_owner`` runs running, the one served least
recently (the latest start of any of their runs; never served counts as longest ago)
gets the slot, ties broken by their oldest waiting run. Within an owner their runs go
oldest first. Once served an owner goes to the back of the line.

So however many runs one owner queues, another owner's run waits for at most one start
per other owner with runs waiting: a flood by one user delays someone else's run by one
run slot at most. The store feeds this with at most ``per_owner`` waiting runs per owner
(a per-owner window in SQL), which one owner's flood cannot crowd out either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NEVER = float("-inf")


@dataclass(frozen=True)
class Waiting:
    """A waiting run as the queue sees it."""

    id: int
    owner: str
    not_before: float


def _turn_order(runs: Iterable[Waiting]) -> dict[str, list[Waiting]]:
    queues: dict[str, list[Waiting]] = {}
    for run in sorted(runs, key=lambda r: (r.not_before, r.id)):
        queues.setdefault(run.owner, []).append(run)
    return queues


def fair_pick(
    waiting: Iterable[Waiting],
    running: Mapping[str, int],
    last_start: Mapping[str, float],
    free: int,
    per_owner: int,
) -> list[Waiting]:
    """The runs to start now, in start order: at most ``free`` of them, and no owner above
    ``per_owner`` runs counting the ``running`` ones. ``last_start`` is each owner's latest
    start (epoch seconds); owners missing from it were never served."""
    if free <= 0 or per_owner <= 0:
        return []
    queues = _turn_order(waiting)
    busy = {owner: running.get(owner, 0) for owner in queues}
    # (served in this pick?, when last served, oldest waiting run): smallest goes next
    turn = {
        owner: (0, last_start.get(owner, NEVER), runs[0].not_before, runs[0].id)
        for owner, runs in queues.items()
    }
    chosen: list[Waiting] = []
    served = 0
    while len(chosen) < free:
        ready = [o for o, runs in queues.items() if runs and busy[o] < per_owner]
        if not ready:
            break
        owner = min(ready, key=lambda o: (turn[o], o))
        run = queues[owner].pop(0)
        chosen.append(run)
        busy[owner] += 1
        served += 1
        turn[owner] = (1, float(served), 0.0, 0)
    return chosen
