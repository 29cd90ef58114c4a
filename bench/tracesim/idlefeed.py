"""The simulated GPU sampler that feeds werkhub's idle detector.

``werkhub.service.app.watch_idle`` samples the booked GPUs every tick, keeps them in a
``SampleWindow``, asks ``idle_verdicts`` about every active booking and hands each verdict
that calls for action to ``BookingManager.idle_action``. The replay does the same with
samples made from the simulated utilisation: while a task runs its GPUs read
``gpu_milli / 10`` percent (whole GPUs: 100), before it starts and after it ends 0;
``mem_util`` reads the same as ``gpu_util``.

Samples lie on a grid of ``step`` minutes. The replay does not run the detector at every
grid point: a sample is only made when a check needs it, and the samples a real sampler
would have taken since a unit's last check are filled in then (``SampleWindow`` keeps the
last ``idle_minutes`` plus two gaps of them), so every verdict sees what the real sampler
would have recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from werkhub.booking.idle import IdlePolicy, SampleWindow, UtilSample, Verdict, idle_verdicts
from werkhub.booking.ledger import Slot

#: utilisation in percent of booking ``id``'s GPUs at minute ``m``
UtilOf = Callable[[int, int], float]


class IdleFeed:
    def __init__(
        self, policy: IdlePolicy, step: int, origin: datetime, util_of: UtilOf, to_min: Callable
    ) -> None:
        self.policy = policy
        self.step = step
        self.origin = origin
        self.util_of = util_of
        self.to_min = to_min
        self.window = SampleWindow.for_policy(policy)
        self.keep = int(self.window.keep.total_seconds() // 60)
        #: the newest grid minute sampled per unit, and the booking it was sampled for
        self.last: dict[str, int] = {}
        self.owner: dict[str, int] = {}
        self.made = 0

    def at(self, minute: int) -> datetime:
        return self.origin + timedelta(minutes=minute)

    def _fill(self, slot: Slot, now: int) -> None:
        start = self.to_min(slot.start)
        batch = []
        for unit in slot.devices:
            first = max(self.last.get(unit, -(10**9)) + self.step, now - self.keep, start)
            first += -first % self.step  # onto the grid
            for g in range(first, now + 1, self.step):
                util = self.util_of(slot.id, g)
                batch.append(UtilSample(at=self.at(g), unit=unit, gpu_util=util, mem_util=util))
            if first <= now:
                self.last[unit] = now - now % self.step
        self.made += len(batch)
        self.window.add(batch)

    def verdicts(self, slots: Sequence[Slot], now: int) -> dict[int, Verdict]:
        """The detector's verdict on each of ``slots`` at minute ``now``."""
        for slot in slots:
            # a unit that changed hands starts a fresh series (the detector ignores samples
            # from before a booking's start anyway)
            moved = [u for u in slot.devices if self.owner.get(u) != slot.id]
            if moved:
                self.window.retain(set(self.window.units) - set(moved))
                for unit in moved:
                    self.last.pop(unit, None)
                    self.owner[unit] = slot.id
            self._fill(slot, now)
        moment = self.at(now)
        self.window.prune(moment)
        units = [u for s in slots for u in s.devices]
        return idle_verdicts(
            self.window.samples(units),
            {s.id: s.devices for s in slots},
            moment,
            self.policy,
            since={s.id: s.start for s in slots},
        )

    def forget(self, active_units: set[str]) -> None:
        """Drop what is known of units no active booking holds."""
        self.window.retain(active_units)
        for unit in [u for u in self.last if u not in active_units]:
            del self.last[unit]
            self.owner.pop(unit, None)
