"""Run-to-failure histories of a fleet of centrifugal pumps.

Degradation model (what the notebook explains):

* Each pump has a hidden wear state ``w`` that starts small (``w0``, manufacturing spread) and
  fails at ``w >= 1``. Wear grows a little every operating cycle (a day, say):
  ``dw = r * s(regime) * (0.05 + w) * e`` with ``e`` a random factor of mean 1: the growth is
  proportional to the wear already there (a spalled bearing race damages itself faster), ``s``
  is the load factor of the operating regime and ``r`` a per-pump rate (lognormal: some pumps
  are simply worse). Part of ``r`` comes from installation misalignment, which also raises the
  pump's vibration from day one; the rest is hidden.
* Pumps run in three operating regimes (low / nominal / high duty), switching as a Markov chain.
  The regime shifts every sensor's baseline, so a raw threshold on vibration mostly detects
  "high duty", not wear.
* Sensors per cycle:
  - ``vibration_mm_s``: RMS velocity, regime baseline (x misalignment) + ``4 * w**2``, noise,
  - ``bearing_temp_c``: ambient (slow random walk) + load heating + ``12 * w`` (friction), noise,
  - ``pressure_bar``: regime head x ``(1 - 0.2 * w)`` (impeller/wear-ring losses), noise.

Every unit runs until it fails; ``rul`` is the true remaining useful life in cycles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SENSORS: tuple[str, ...] = ("vibration_mm_s", "bearing_temp_c", "pressure_bar")
REGIMES: tuple[str, ...] = ("low", "nominal", "high")
_LOAD = np.array([0.6, 1.0, 1.5])  # wear-rate multiplier per regime
_VIB = np.array([1.6, 2.4, 3.4])  # mm/s baseline
_TEMP = np.array([4.0, 9.0, 16.0])  # K above ambient from load
_HEAD = np.array([4.0, 6.0, 8.5])  # bar
_SWITCH = 0.08  # probability of changing regime per cycle


def simulate_fleet(n_units: int = 100, seed: int = 0, noise: float = 1.0) -> pd.DataFrame:
    """Simulate ``n_units`` pumps from new until failure.

    Returns one row per unit and cycle with columns ``unit, cycle, regime`` (0, 1, 2), the
    :data:`SENSORS`, ``wear`` (hidden state, for teaching only) and ``rul``. ``noise`` scales all
    sensor noise (1.0 = realistic, 0 = noiseless).
    """
    rng = np.random.default_rng(seed)
    misalignment = rng.normal(0.0, 1.0, n_units)  # installation quality, in standard deviations
    rate = 0.021 * np.exp(0.3 * misalignment + 0.15 * rng.normal(0.0, 1.0, n_units))
    wear = rng.uniform(0.0, 0.08, n_units)
    regime = rng.integers(0, 3, n_units)
    ambient = rng.normal(25.0, 3.0, n_units)
    alive = np.ones(n_units, dtype=bool)
    cycle = 0
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("unit", "cycle", "regime", "wear", *SENSORS)
    }
    units = np.arange(n_units)
    while alive.any():
        cycle += 1
        switch = rng.random(n_units) < _SWITCH
        regime = np.where(switch, rng.integers(0, 3, n_units), regime)
        growth = rate * _LOAD[regime] * (0.05 + wear)
        wear = wear + growth * rng.gamma(4.0, 0.25, n_units)  # mean 1, some cycle-to-cycle jitter
        ambient = ambient + rng.normal(0.0, 0.2, n_units) - 0.05 * (ambient - 25.0)
        vib = _VIB[regime] * rng.lognormal(0, 0.06 * noise, n_units) * (1 + 0.12 * misalignment)
        vib = vib + 4.0 * np.minimum(wear, 1) ** 2
        temp = ambient + _TEMP[regime] + 12.0 * wear + rng.normal(0, 0.8 * noise, n_units)
        pressure = _HEAD[regime] * (1 - 0.2 * np.minimum(wear, 1)) + rng.normal(
            0, 0.08 * noise, n_units
        )
        vib = vib + rng.normal(0, 0.15 * noise, n_units)
        for key, value in (
            ("unit", units),
            ("cycle", np.full(n_units, cycle)),
            ("regime", regime),
            ("wear", np.minimum(wear, 1.0)),
            ("vibration_mm_s", vib),
            ("bearing_temp_c", temp),
            ("pressure_bar", pressure),
        ):
            columns[key].append(value[alive])
        alive &= wear < 1.0
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
    frame = frame.sort_values(["unit", "cycle"], ignore_index=True)
    life = frame.groupby("unit")["cycle"].transform("max")
    frame["rul"] = life - frame["cycle"]
    return frame


def load_histories(path: str | Path) -> pd.DataFrame:
    """Load your own histories from CSV or Parquet.

    Expected columns: ``unit``, ``cycle``, ``regime`` (integer operating mode) and the
    :data:`SENSORS` (rename yours to match). Units that ran to failure need no ``rul`` column:
    it is computed as last cycle minus cycle. Raises ``ValueError`` naming missing columns.
    """
    path = Path(path)
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in ("unit", "cycle", "regime", *SENSORS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path.name} lacks columns {missing}")
    frame = frame.sort_values(["unit", "cycle"], ignore_index=True)
    if "rul" not in frame.columns:
        frame["rul"] = frame.groupby("unit")["cycle"].transform("max") - frame["cycle"]
    return frame


def add_features(frame: pd.DataFrame, baseline: pd.DataFrame, window: int = 10) -> pd.DataFrame:
    """Regime-normalised sensors, their rolling mean and trend, plus the age of the unit.

    ``baseline`` holds the mean and standard deviation of each sensor per regime in healthy
    operation (see :func:`regime_baseline`). Only past and present cycles are used, so the
    features are available online.
    """
    out = frame[["unit", "cycle", "regime"]].copy()
    stats = baseline.loc[frame["regime"].to_numpy()]
    z_cols = [f"{sensor}_z" for sensor in SENSORS]
    for sensor, col in zip(SENSORS, z_cols, strict=True):
        mean = stats[(sensor, "mean")].to_numpy()
        out[col] = (frame[sensor].to_numpy() - mean) / stats[(sensor, "std")].to_numpy()
    by_unit = out.groupby("unit")[z_cols]
    smooth = by_unit.transform(lambda s: s.rolling(window, min_periods=1).mean())
    trend = (smooth - smooth.groupby(out["unit"]).shift(window)).fillna(0.0)
    out[[f"{c}_mean" for c in z_cols]] = smooth.to_numpy()
    out[[f"{c}_trend" for c in z_cols]] = trend.to_numpy()
    return out.drop(columns=["unit", "regime"])


def regime_baseline(frame: pd.DataFrame, healthy_cycles: int = 30) -> pd.DataFrame:
    """Mean and standard deviation of each sensor per regime over the first cycles of life."""
    early = frame[frame["cycle"] <= healthy_cycles]
    return early.groupby("regime")[list(SENSORS)].agg(["mean", "std"])
