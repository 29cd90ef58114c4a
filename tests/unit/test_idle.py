"""Idle GPUs: verdicts over recorded utilization traces, the sample window, and the NVML
sampler on a machine without a driver (and with a fake NVML)."""

from __future__ import annotations

import logging
import random
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from werkhub.booking import idle
from werkhub.booking.idle import IdlePolicy, SampleWindow, UtilSample, idle_verdict
from werkhub.gpus import sampler as gpu_sampler

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
MIN = timedelta(minutes=1)
POLICY = IdlePolicy()  # 5 %, 30 minutes, report, 3 samples, every 30 s, gaps up to 60 s
RELEASE = IdlePolicy(action="release")

#: (minutes, gpu %, memory-bandwidth %); gpu None: no samples (the sampler was down)
Segment = tuple[float, float | None, float]


def trace(unit: str, *segments: Segment, start: datetime = T0) -> list[UtilSample]:
    """A recorded trace: one sample every 30 s per segment, deterministic."""
    samples, moment = [], start
    for minutes, gpu, mem in segments:
        end = moment + timedelta(minutes=minutes)
        while moment < end:
            if gpu is not None:
                samples.append(UtilSample(at=moment, unit=unit, gpu_util=gpu, mem_util=mem))
            moment += STEP
    return samples


def ticks(start: datetime, end: datetime) -> Iterator[datetime]:
    return (start + k * STEP for k in range(int((end - start) / STEP) + 1))


def until(samples: list[UtilSample], now: datetime) -> list[UtilSample]:
    return [s for s in samples if s.at <= now]


def at(samples: list[UtilSample], now: datetime, policy: IdlePolicy = POLICY) -> idle.Verdict:
    """The verdict for the one-GPU booking "demo/0" at ``now``, from the samples so far."""
    return idle_verdict(until(samples, now), ["demo/0"], now, policy)


TRAINING = trace("demo/0", (40, 95, 60), (35, 0, 0))  # training, then a forgotten GPU


def test_training_run_then_forgotten_gpu_becomes_idle_after_the_window() -> None:
    first_idle = None
    for now in ticks(T0, T0 + 75 * MIN):
        v = at(TRAINING, now)
        if v.state == "idle":
            first_idle = first_idle or now
        elif first_idle is None:
            assert v.state in ("busy", "unknown") and v.action == "none"
    # training ends at 08:40 (last busy sample 08:39:30): idle 30 minutes later, no earlier
    assert first_idle == T0 + 70 * MIN
    v = at(TRAINING, T0 + 75 * MIN)
    assert (v.state, v.action, v.idle_since) == ("idle", "report", T0 + 40 * MIN)
    assert v.units[0].samples == 60  # 08:45:00 .. 09:14:30
    during = at(TRAINING, T0 + 60 * MIN)
    assert (during.state, during.idle_since) == ("busy", T0 + 40 * MIN)  # quiet 20 min so far
    assert at(TRAINING, T0 + 75 * MIN, RELEASE).action == "release"
    # werkhub just started: quiet data for two minutes proves nothing
    v = at(trace("demo/0", (2, 0, 0)), T0 + 2 * MIN)
    assert v.state == "unknown" and v.action == "none" and "only since" in v.reason


def test_notebook_user_pausing_twenty_minutes_is_never_idle() -> None:
    notebook = trace("demo/0", (10, 70, 20), (20, 0, 1), (10, 40, 10), (20, 1, 0))
    states = {at(notebook, now, RELEASE).state for now in ticks(T0 + 30 * STEP, T0 + 60 * MIN)}
    assert states == {"busy"}
    paused = at(notebook, T0 + 25 * MIN, RELEASE)
    assert paused.idle_since == T0 + 10 * MIN and paused.action == "none"


def test_a_ten_minute_gap_is_unknown_never_released() -> None:
    gappy = trace("demo/0", (40, 0, 0), (10, None, 0), (40, 0, 0))
    for minutes, state in [(35, "idle"), (40.5, "idle"), (41, "unknown"), (60, "unknown")]:
        v = at(gappy, T0 + minutes * MIN, RELEASE)
        assert v.state == state, minutes
        assert v.action == ("release" if state == "idle" else "none")
    stale = at(gappy, T0 + 45 * MIN, RELEASE)
    assert "stale" in stale.reason and stale.idle_since is None
    after = at(gappy, T0 + 60 * MIN, RELEASE)
    assert "gap in samples from 08:39:30 to 08:50:00" in after.reason
    assert after.idle_since == T0 + 50 * MIN  # the streak restarts after the gap
    # idle again once the window lies after the gap: 08:50 + 30 min - one interval
    assert at(gappy, T0 + 80 * MIN - STEP).state == "idle"
    assert at(gappy, T0 + 80 * MIN - 2 * STEP).state == "unknown"


def test_one_missed_sample_is_tolerated_two_are_not() -> None:
    quiet = trace("demo/0", (40, 0, 0))
    one = [s for s in quiet if s.at != T0 + 30 * MIN]
    two = [s for s in one if s.at != T0 + 30 * MIN + STEP]
    now = T0 + 39 * MIN
    assert (at(one, now).state, at(two, now).state) == ("idle", "unknown")
    assert at(two, now, IdlePolicy(max_gap_seconds=120)).state == "idle"


def test_a_booking_is_idle_only_when_every_unit_is_idle() -> None:
    quiet = trace("demo/0", (45, 0, 0))
    busy = trace("demo/1", (45, 88, 35))
    now = T0 + 45 * MIN
    v = idle_verdict(quiet + busy, ["demo/0", "demo/1"], now, RELEASE)
    assert (v.state, v.action, v.idle_since) == ("busy", "none", None)
    assert [(u.unit, u.state) for u in v.units] == [("demo/0", "idle"), ("demo/1", "busy")]
    assert v.reason.startswith("demo/1: busy at 08:44:30")
    # both quiet: idle since the later of the two streaks
    late = trace("demo/1", (5, 50, 0), (40, 0, 0))
    both = idle_verdict(quiet + late, ["demo/0", "demo/1"], now, RELEASE)
    assert (both.state, both.action, both.idle_since) == ("idle", "release", T0 + 5 * MIN)
    # a MIG slice has no samples: its booking is never idle
    v = idle_verdict(quiet, ["demo/0", "demo/3/3g.40gb-0"], T0 + 45 * MIN, RELEASE)
    assert (v.state, v.action) == ("unknown", "none")
    assert v.reason == "demo/3/3g.40gb-0: no samples"
    assert idle_verdict([], [], T0, RELEASE).state == "unknown"


@pytest.mark.parametrize(
    ("spike_gpu", "spike_mem", "state"),
    [(5.5, 0, "busy"), (5.0, 0, "busy"), (4.9, 4.9, "idle"), (0, 6, "busy"), (100, 100, "busy")],
)
def test_noise_spikes_around_the_threshold(spike_gpu: float, spike_mem: float, state: str) -> None:
    noisy = trace("demo/0", (90, 2, 1))
    spike = T0 + 50 * MIN
    noisy = [
        s.model_copy(update={"gpu_util": spike_gpu, "mem_util": spike_mem}) if s.at == spike else s
        for s in noisy
    ]
    v = at(noisy, T0 + 60 * MIN - STEP)
    assert v.state == state
    if state == "busy":
        assert v.idle_since == spike + STEP
        assert at(noisy, spike + 30 * MIN).state == "busy"  # the window includes its start
        assert at(noisy, spike + 30 * MIN + STEP).state == "idle"  # the spike has left it


def test_samples_out_of_order_give_the_same_verdict() -> None:
    units = ["demo/0", "demo/1"]
    two = trace("demo/1", (10, 70, 20), (40, 0, 1)) + trace("demo/0", (50, 0, 0))
    shuffled = random.Random(7).sample(two, len(two))
    for now in ticks(T0 + 20 * MIN, T0 + 50 * MIN):
        expected = idle_verdict(until(two, now), units, now, POLICY)
        assert idle_verdict(until(shuffled, now), units, now, POLICY) == expected
    assert idle_verdict(shuffled, ["demo/1"], T0 + 45 * MIN, POLICY).state == "idle"


def test_future_samples_other_units_and_booking_start_are_respected() -> None:
    now = T0 + 40 * MIN
    later_busy = UtilSample(at=now + STEP, unit="demo/0", gpu_util=99, mem_util=9)
    quiet = [*trace("demo/0", (60, 0, 0)), later_busy]  # samples after now are ignored
    assert at(quiet, now).idle_since == T0
    started = now - 10 * MIN  # the previous booking's idle time is not this user's
    v = idle_verdict(quiet, ["demo/0"], now, POLICY, since=started)
    assert (v.state, v.idle_since) == ("unknown", started)
    assert idle_verdict(quiet, ["demo/2"], now, POLICY).state == "unknown"


def test_too_few_samples_in_the_window() -> None:
    sparse = IdlePolicy(idle_minutes=2, sample_interval_seconds=60, min_samples=4)
    samples = trace("demo/0", (10, 0, 0))[::2]  # one a minute
    v = idle.unit_verdict("demo/0", samples, T0 + 9 * MIN, sparse)
    assert (v.state, v.samples, v.reason) == ("unknown", 3, "3 samples in the window, 4 needed")
    relaxed = sparse.model_copy(update={"min_samples": 3})
    assert idle.unit_verdict("demo/0", samples, T0 + 9 * MIN, relaxed).state == "idle"


def test_idle_verdicts_for_several_bookings() -> None:
    samples = TRAINING + trace("demo/1", (75, 0, 0))
    bookings = {7: ["demo/0"], 8: ["demo/1"], 9: ["demo/0", "demo/1"]}
    got = idle.idle_verdicts(samples, bookings, T0 + 60 * MIN, RELEASE, since={8: T0 + 45 * MIN})
    assert {k: v.state for k, v in got.items()} == {7: "busy", 8: "unknown", 9: "busy"}
    assert {v.action for v in got.values()} == {"none"}


def test_models_reject_bad_input() -> None:
    fine: dict[str, Any] = {"at": T0, "unit": "demo/0", "gpu_util": 0, "mem_util": 0}
    for bad in ({"at": datetime(2026, 3, 2, 8, 0)}, {"gpu_util": 101}, {"mem_util": -1}):
        with pytest.raises(ValidationError):
            UtilSample(**(fine | bad))
    for policy in ({"max_gap_seconds": 10}, {"action": "kill"}, {"idle_minutes": 0}):
        with pytest.raises(ValidationError):
            IdlePolicy(**policy)
    with pytest.raises(ValueError):
        idle_verdict(TRAINING, ["demo/0"], datetime(2026, 3, 2, 9, 0), POLICY)
    berlin = UtilSample.model_validate(fine | {"at": "2026-03-02T09:00:00+01:00"})
    assert berlin.at == T0 and berlin.at.tzinfo is UTC


def test_sample_window_feeds_the_same_verdicts_tick_by_tick() -> None:
    window = SampleWindow.for_policy(POLICY)
    for now in ticks(T0, T0 + 75 * MIN):
        window.add(s for s in TRAINING if s.at == now)
        window.prune(now)
        full = at(TRAINING, now)
        kept = idle_verdict(window.samples(["demo/0"]), ["demo/0"], now, POLICY)
        assert (kept.state, kept.action) == (full.state, full.action)
        # idle_since reaches back at most as far as the window keeps samples
        assert kept.idle_since == (full.idle_since and max(full.idle_since, now - window.keep))
    assert (window.keep, len(window), window.samples()[0].at) == (32 * MIN, 64, T0 + 43 * MIN)


def test_sample_window_keeps_minutes_sorted_per_unit() -> None:
    window = SampleWindow(keep_minutes=5, max_per_unit=8)
    samples = trace("demo/0", (10, 0, 0)) + trace("demo/1", (2, 50, 0))
    random.Random(3).shuffle(samples)
    window.add(samples)
    kept = window.samples(["demo/0"])
    assert [s.at for s in kept] == sorted(s.at for s in kept)
    assert len(kept) == 8 and kept[-1].at == T0 + 10 * MIN - STEP  # capped at 8
    assert window.units == ["demo/0", "demo/1"] and len(window.samples(["demo/1"])) == 4
    window.prune(T0 + 7 * MIN)  # demo/1 is older than 5 minutes
    assert window.units == ["demo/0"]
    window.retain(["demo/2"])  # forget demo/0
    assert (len(window), window.samples()) == (0, [])
    with pytest.raises(ValueError):
        SampleWindow(keep_minutes=0)


def test_device_indexes_take_whole_gpus_of_one_node() -> None:
    ids = ["demo/0", "demo/3/3g.40gb-0", "gpu1/2", "bad", "demo/x"]
    assert gpu_sampler.device_indexes(ids) == {"demo/0": 0, "gpu1/2": 2}
    assert gpu_sampler.device_indexes(ids, node="gpu1") == {"gpu1/2": 2}


def _driver_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


def test_sample_without_a_driver_is_empty_and_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    gpu_sampler._told.clear()
    with caplog.at_level(logging.INFO, logger="werkhub.gpus.sampler"):
        assert gpu_sampler.sample({"demo/0": 0, "demo/1": 1}) == []
        assert gpu_sampler.sample({"demo/0": 0}) == []  # said once, not every tick
        monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
        assert gpu_sampler.sample({"demo/0": 0}) == []
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 2 and "NVML unavailable" in infos[0], infos
    assert "nvidia-ml-py is not installed" in infos[1]


class NVMLError(Exception): ...


def fake_nvml(mig: set[int], broken: set[int]) -> types.SimpleNamespace:
    """4 GPUs: 0 without MIG, ``mig`` in MIG mode, ``broken`` unreadable; i: 10*i %, i %."""

    def handle(index: int) -> int:
        if index in broken:
            raise NVMLError("Not Supported")
        return index

    def mig_mode(h: int) -> tuple[int, int]:
        if h == 0:
            raise NVMLError("Not Supported")
        return (1, 1) if h in mig else (0, 0)

    return types.SimpleNamespace(
        NVMLError=NVMLError,
        NVML_DEVICE_MIG_ENABLE=1,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 4,
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=10 * h, memory=h),
    )


def test_sample_reads_whole_gpus_and_skips_mig(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(mig={3}, broken={2}))
    units = {"n/0": 0, "n/1": 1, "n/2": 2, "n/3": 3, "n/3/3g.40gb-0": 300, "n/9": 9}
    got = [(s.unit, s.gpu_util, s.mem_util, s.at) for s in gpu_sampler.sample(units, now=T0)]
    assert got == [("n/0", 0, 0, T0), ("n/1", 10, 1, T0)]
    assert gpu_sampler.sample({"n/3/3g.40gb-0": 300}) == []
