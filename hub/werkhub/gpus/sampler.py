"""Read GPU utilization through NVML (package nvidia-ml-py) for the idle-GPU rules.

Thin I/O around ``werkhub.booking.idle``: one ``UtilSample`` per whole GPU, from
``nvmlDeviceGetUtilizationRates`` (``.gpu``: percent of time a kernel ran, ``.memory``:
percent of time device memory was read or written). ``pynvml`` is imported inside the
functions, so this module loads on machines without it.

What gets no sample (and so stays "unknown", never "idle"): MIG slices and GPUs in MIG
mode (NVML reports no per-slice utilization on most drivers), devices NVML cannot read,
and everything on a machine without an NVIDIA driver, where ``sample`` logs why and
returns ``[]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from werkhub.booking.idle import UtilSample

log = logging.getLogger("werkhub.gpus.sampler")
_told: set[str] = set()


def _say(reason: str) -> None:
    """Log a reason once at INFO (the tick runs every 30 seconds), then at DEBUG."""
    if reason in _told:
        log.debug("no GPU utilization: %s", reason)
        return
    _told.add(reason)
    log.info("no GPU utilization: %s", reason)


def device_indexes(unit_ids: Iterable[str], node: str | None = None) -> dict[str, int]:
    """Whole-GPU unit ids ("NODE/INDEX") -> NVML device index.

    MIG slices ("NODE/INDEX/PROFILE-N") and malformed ids are left out; with ``node``, so
    are the units of other nodes. Pass only units of GPUs on this machine: a simulated
    inventory (the demo) must not be sampled, its indexes mean nothing here.
    """
    indexes = {}
    for unit in unit_ids:
        parts = unit.split("/")
        if len(parts) != 2 or not parts[1].isdigit() or (node is not None and parts[0] != node):
            continue
        indexes[unit] = int(parts[1])
    return indexes


def sample(units: dict[str, int], now: datetime | None = None) -> list[UtilSample]:
    """One sample per readable unit (unit id -> device index); [] without NVML."""
    wanted = {u: i for u, i in units.items() if u.count("/") <= 1}
    if not wanted:
        return []
    try:
        import pynvml
    except ImportError:
        _say("nvidia-ml-py is not installed")
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError, or OSError from a broken libnvidia-ml
        _say(f"NVML unavailable ({exc}); no NVIDIA driver on this machine?")
        return []
    at = now or datetime.now(UTC)
    try:
        count = pynvml.nvmlDeviceGetCount()
        samples = []
        for unit, index in sorted(wanted.items()):
            reading = _read(pynvml, index, count)
            if reading is None:
                continue
            gpu, memory = reading
            samples.append(UtilSample(at=at, unit=unit, gpu_util=gpu, mem_util=memory))
        return samples
    except Exception as exc:
        _say(f"NVML failed ({exc})")
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)


def _read(pynvml: Any, index: int, count: int) -> tuple[float, float] | None:
    if not 0 <= index < count:
        _say(f"device {index} does not exist (NVML sees {count})")
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        if _mig_enabled(pynvml, handle):
            _say(f"device {index} is in MIG mode: no per-slice utilization")
            return None
        rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
    except pynvml.NVMLError as exc:
        _say(f"device {index}: {exc}")
        return None
    return _percent(rates.gpu), _percent(rates.memory)


def _mig_enabled(pynvml: Any, handle: Any) -> bool:
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:
        return False  # not supported: no MIG on this GPU
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def _percent(value: Any) -> float:
    return min(100.0, max(0.0, float(value)))
