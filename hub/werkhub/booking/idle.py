"""Idle booked GPUs: pure rules over recorded utilization samples (stdlib and pydantic only).

A sampler (``werkhub.gpus.sampler``) records, every ``sample_interval_seconds``, one
``UtilSample`` per GPU unit: ``gpu_util`` (percent of time a kernel ran) and ``mem_util``
(percent of time device memory was read or written). These rules turn such samples into a
verdict per booking; they never look at NVML, the database or the web.

Rules, for one unit, with ``window = [now - idle_minutes, now]`` and ``gap = max_gap_seconds``
(default: twice the sampling interval):

* Samples are sorted by time first (input order does not matter); samples after ``now``,
  before ``since`` (the booking's start: earlier samples belong to someone else) or of
  other units are ignored.
* A sample is *quiet* when ``gpu_util < threshold_percent`` and ``mem_util <
  threshold_percent`` (strictly below; a spike at or above the threshold is activity).
* The *quiet streak* is the trailing run of quiet samples, walking back from the newest,
  in which no two neighbours are more than ``gap`` apart. It ends (going back) at a busy
  sample, at a gap, or where the data starts. ``idle_since`` is its first sample.
* ``unknown``: no samples; or the newest is older than ``gap`` (the sampler stopped);
  or the streak does not reach the window start (its first sample is later than
  ``window start + sample_interval_seconds``) because of a gap or because the data starts
  too late; or fewer than ``min_samples`` samples lie in the window.
* ``busy``: data is fresh and a sample in the window is not quiet, or the streak is too
  short because a busy sample precedes it.
* ``idle``: data is fresh, every sample in the window is quiet, the streak covers the
  window (first sample at or before window start + one sampling interval, no gap larger
  than ``gap`` anywhere from there to ``now``) and at least ``min_samples`` lie in it.

For a booking: ``busy`` if any unit is busy, else ``unknown`` if any unit is unknown (or
the booking has no devices), else ``idle``. Its ``idle_since`` is the latest of its units'
(only when every unit has one). The action is ``policy.action`` ("report" or "release")
for an idle booking and "none" otherwise: missing data never releases a GPU. MIG slices
get no samples from NVML, so a booking with a MIG slice is never idle.

The caller decides how often to act on a verdict (e.g. report once per ``idle_since``).
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

State = Literal["busy", "idle", "unknown"]
Action = Literal["none", "report", "release"]
K = TypeVar("K", bound=Hashable)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times need a UTC offset")
    return moment.astimezone(UTC)


class UtilSample(BaseModel):
    """One utilization reading of one unit ("node/index")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    unit: str = Field(min_length=1)
    gpu_util: float = Field(ge=0, le=100)
    mem_util: float = Field(ge=0, le=100)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _utc(value)


class IdlePolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: gpu and memory-bandwidth utilization strictly below this is quiet; 0: never idle
    threshold_percent: float = Field(default=5, ge=0, le=100)
    idle_minutes: int = Field(default=30, ge=1, le=1440)
    action: Literal["report", "release"] = "report"
    min_samples: int = Field(default=3, ge=1)
    sample_interval_seconds: float = Field(default=30, gt=0, le=3600)
    #: largest tolerated distance between neighbouring samples and between the newest
    #: sample and now; None: twice the sampling interval
    max_gap_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _gap_covers_interval(self) -> IdlePolicy:
        if self.max_gap_seconds is not None and self.max_gap_seconds < self.sample_interval_seconds:
            raise ValueError("max_gap_seconds must be at least sample_interval_seconds")
        return self

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.idle_minutes)

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.sample_interval_seconds)

    @property
    def gap(self) -> timedelta:
        seconds = self.max_gap_seconds
        return timedelta(seconds=2 * self.sample_interval_seconds if seconds is None else seconds)

    def quiet(self, sample: UtilSample) -> bool:
        limit = self.threshold_percent
        return sample.gpu_util < limit and sample.mem_util < limit


class UnitVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    unit: str
    state: State
    #: first sample of the current quiet streak; None when the newest sample is busy or
    #: the data is missing or stale
    idle_since: datetime | None = None
    #: samples inside the window
    samples: int = 0
    reason: str = ""


class Verdict(BaseModel):
    """What to make of one booking's units."""

    model_config = ConfigDict(frozen=True)

    state: State
    action: Action = "none"
    idle_since: datetime | None = None
    units: tuple[UnitVerdict, ...] = ()
    reason: str = ""


def _hms(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}"


def _streak(series: Sequence[UtilSample], policy: IdlePolicy) -> tuple[int, str]:
    """Index of the quiet streak's first sample (len(series) if none) and what ended it."""
    first = len(series)
    for i in range(len(series) - 1, -1, -1):
        if not policy.quiet(series[i]):
            return first, "busy"
        if first < len(series) and series[first].at - series[i].at > policy.gap:
            return first, "gap"
        first = i
    return first, "start"


def unit_verdict(
    unit: str,
    samples: Iterable[UtilSample],
    now: datetime,
    policy: IdlePolicy,
    since: datetime | None = None,
) -> UnitVerdict:
    """The verdict for one unit; ``samples`` may hold other units and be in any order."""
    now = _utc(now)
    lo = None if since is None else _utc(since)
    series = sorted(
        (s for s in samples if s.unit == unit and s.at <= now and (lo is None or s.at >= lo)),
        key=lambda s: s.at,
    )
    if not series:
        return UnitVerdict(unit=unit, state="unknown", reason="no samples")
    if now - series[-1].at > policy.gap:
        reason = f"no sample since {_hms(series[-1].at)} (stale)"
        return UnitVerdict(unit=unit, state="unknown", reason=reason)
    start = now - policy.window
    in_window = [s for s in series if s.at >= start]
    first, ended_by = _streak(series, policy)
    quiet_since = series[first].at if first < len(series) else None
    loud = [s for s in in_window if not policy.quiet(s)]
    state: State = "unknown"
    if loud:
        state, reason = "busy", f"busy at {_hms(loud[-1].at)}"
    elif not in_window or quiet_since is None:
        reason = "no sample in the window"
    elif quiet_since > start + policy.interval:
        before = _hms(series[first - 1].at) if first else ""
        if ended_by == "busy":
            state, reason = "busy", f"busy at {before}, quiet only since {_hms(quiet_since)}"
        elif ended_by == "gap":
            reason = f"gap in samples from {before} to {_hms(quiet_since)}"
        else:
            reason = f"samples only since {_hms(quiet_since)}"
    elif len(in_window) < policy.min_samples:
        reason = f"{len(in_window)} samples in the window, {policy.min_samples} needed"
    else:
        state = "idle"
        reason = f"below {policy.threshold_percent:g}% since {_hms(quiet_since)}"
    return UnitVerdict(
        unit=unit, state=state, idle_since=quiet_since, samples=len(in_window), reason=reason
    )


def idle_verdict(
    samples: Sequence[UtilSample],
    units: Sequence[str],
    now: datetime,
    policy: IdlePolicy,
    since: datetime | None = None,
) -> Verdict:
    """The verdict for one booking holding ``units``; ``since``: when it started."""
    if not units:
        return Verdict(state="unknown", reason="booking has no devices")
    verdicts = tuple(unit_verdict(u, samples, now, policy, since) for u in dict.fromkeys(units))
    states = {v.state for v in verdicts}
    state: State = "busy" if "busy" in states else "unknown" if "unknown" in states else "idle"
    reason = "; ".join(f"{v.unit}: {v.reason}" for v in verdicts if v.state == state)
    starts = [v.idle_since for v in verdicts if v.idle_since is not None]
    idle_since = max(starts) if len(starts) == len(verdicts) else None
    action: Action = policy.action if state == "idle" else "none"
    return Verdict(state=state, action=action, idle_since=idle_since, units=verdicts, reason=reason)


def idle_verdicts(
    samples: Sequence[UtilSample],
    bookings: Mapping[K, Sequence[str]],
    now: datetime,
    policy: IdlePolicy,
    since: Mapping[K, datetime] | None = None,
) -> dict[K, Verdict]:
    """Verdicts for several bookings: booking key -> its unit ids (``since``: their starts)."""
    wanted = {u for units in bookings.values() for u in units}
    by_unit: dict[str, list[UtilSample]] = {u: [] for u in wanted}
    for s in samples:
        if s.unit in by_unit:
            by_unit[s.unit].append(s)
    starts = since or {}
    return {
        key: idle_verdict(
            [s for u in units for s in by_unit[u]], units, now, policy, starts.get(key)
        )
        for key, units in bookings.items()
    }


class SampleWindow:
    """The last ``keep_minutes`` of samples per unit, kept sorted; pure and in memory.

    A time-bounded ring buffer: adding drops what is older than the unit's newest sample
    minus ``keep_minutes`` (and beyond ``max_per_unit`` samples, the oldest); ``prune``
    drops by the wall clock, ``retain`` forgets units that are no longer of interest.
    Verdicts from it see ``idle_since`` at most ``keep_minutes`` back.
    """

    def __init__(self, keep_minutes: float = 40, max_per_unit: int = 4096) -> None:
        if keep_minutes <= 0 or max_per_unit < 1:
            raise ValueError("keep_minutes and max_per_unit must be positive")
        self.keep = timedelta(minutes=keep_minutes)
        self.max_per_unit = max_per_unit
        self._units: dict[str, list[UtilSample]] = {}

    @classmethod
    def for_policy(cls, policy: IdlePolicy) -> SampleWindow:
        """Long enough for the window plus the sample that anchors its start."""
        keep = policy.window + 2 * policy.gap
        return cls(keep_minutes=keep.total_seconds() / 60)

    def add(self, samples: Iterable[UtilSample]) -> None:
        touched = set()
        for s in samples:
            bisect.insort(self._units.setdefault(s.unit, []), s, key=lambda x: x.at)
            touched.add(s.unit)
        for unit in touched:
            series = self._units[unit]
            cut = bisect.bisect_left(series, series[-1].at - self.keep, key=lambda x: x.at)
            del series[: max(cut, len(series) - self.max_per_unit)]

    def prune(self, now: datetime) -> None:
        oldest = _utc(now) - self.keep
        for unit in list(self._units):
            series = self._units[unit]
            del series[: bisect.bisect_left(series, oldest, key=lambda x: x.at)]
            if not series:
                del self._units[unit]

    def retain(self, units: Iterable[str]) -> None:
        keep = set(units)
        for unit in [u for u in self._units if u not in keep]:
            del self._units[unit]

    def samples(self, units: Iterable[str] | None = None) -> list[UtilSample]:
        chosen: Iterable[str] = self._units if units is None else dict.fromkeys(units)
        return [s for u in chosen for s in self._units.get(u, ())]

    @property
    def units(self) -> list[str]:
        return sorted(self._units)

    def __len__(self) -> int:
        return sum(len(series) for series in self._units.values())
