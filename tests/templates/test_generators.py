"""The data generators and the heat solver behind the templates: physics and plumbing."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEMPLATES
from scipy.optimize import brentq

for folder in ("quality-inspection", "predictive-maintenance", "heat-treatment-twin"):
    sys.path.insert(0, str(TEMPLATES / folder))
surfaces = importlib.import_module("surfaces")
fleet = importlib.import_module("fleet")
heat = importlib.import_module("heat")


# --- surfaces -------------------------------------------------------------------------------


def test_images_are_reproducible_and_well_formed() -> None:
    images, labels = surfaces.make_images(400, 24, seed=3)
    again, labels_again = surfaces.make_images(400, 24, seed=3)
    assert images.shape == (400, 24, 24) and images.dtype == np.float32
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert images.min() >= 0 and images.max() <= 1
    assert set(np.unique(labels)) == set(range(len(surfaces.CLASSES)))
    other, _ = surfaces.make_images(400, 24, seed=4)
    assert not np.array_equal(images, other)
    _, only_good = surfaces.make_images(50, 24, seed=1, class_weights=(1, 0, 0, 0))
    assert (only_good == 0).all()


def test_pits_are_dark_spots_and_scratches_are_not_round() -> None:
    """A pit is a depression: its darkest pixel stands out far more than on a good surface."""
    images, labels = surfaces.make_images(2000, 32, seed=5, noise=0.02)
    darkness = np.median(images, axis=(1, 2)) - images.min(axis=(1, 2))
    none, pit = darkness[labels == 0], darkness[labels == 2]
    auc = (pit[:, None] > none[None, :]).mean()
    assert auc > 0.9


def test_image_folder_round_trip(tmp_path: Path) -> None:
    images, labels = surfaces.make_images(24, 32, seed=2)
    surfaces.save_image_folder(images, labels, tmp_path / "parts")
    loaded, loaded_labels = surfaces.load_image_folder(tmp_path / "parts", size=16)
    assert loaded.shape == (24, 16, 16) and loaded.max() <= 1
    assert sorted(loaded_labels) == sorted(labels)
    (tmp_path / "parts" / "scratches").mkdir()
    with pytest.raises(ValueError, match="unknown class folders \\['scratches'\\]"):
        surfaces.load_image_folder(tmp_path / "parts")
    (tmp_path / "empty" / "none").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        surfaces.load_image_folder(tmp_path / "empty")


# --- fleet ----------------------------------------------------------------------------------


def test_every_pump_runs_to_failure() -> None:
    histories = fleet.simulate_fleet(40, seed=1)
    for _, pump in histories.groupby("unit"):
        assert (np.diff(pump["cycle"]) == 1).all()
        assert (np.diff(pump["wear"]) >= 0).all(), "wear never heals"
        assert pump["rul"].iloc[-1] == 0 and (np.diff(pump["rul"]) == -1).all()
        assert pump["wear"].iloc[-1] == 1.0 and (pump["wear"].iloc[:-1] < 1).all()
    life = histories.groupby("unit")["cycle"].max()
    assert 60 < life.mean() < 250 and life.std() / life.mean() > 0.2


def test_sensors_follow_regime_and_wear() -> None:
    histories = fleet.simulate_fleet(60, seed=2, noise=0.0)
    healthy = histories[histories["wear"] < 0.2]
    by_regime = healthy.groupby("regime")[list(fleet.SENSORS)].mean()
    assert by_regime["vibration_mm_s"].is_monotonic_increasing
    assert by_regime["pressure_bar"].is_monotonic_increasing
    worn = histories[histories["wear"] > 0.8]
    assert worn["vibration_mm_s"].mean() > healthy["vibration_mm_s"].mean() + 1.5


def test_features_use_only_the_past() -> None:
    histories = fleet.simulate_fleet(10, seed=3)
    baseline = fleet.regime_baseline(histories)
    full = fleet.add_features(histories, baseline)
    early = histories[histories["cycle"] <= 30]
    truncated = fleet.add_features(early, baseline)
    pd.testing.assert_frame_equal(full.loc[early.index], truncated)


def test_load_histories(tmp_path: Path) -> None:
    histories = fleet.simulate_fleet(5, seed=4)
    histories.drop(columns=["rul", "wear"]).to_csv(tmp_path / "h.csv", index=False)
    loaded = fleet.load_histories(tmp_path / "h.csv")
    assert (loaded["rul"].to_numpy() == histories["rul"].to_numpy()).all()
    histories.drop(columns=["pressure_bar"]).to_parquet(tmp_path / "h.parquet")
    with pytest.raises(ValueError, match="lacks columns \\['pressure_bar'\\]"):
        fleet.load_histories(tmp_path / "h.parquet")


# --- heat solver ----------------------------------------------------------------------------


def _slab_core_time(bi: float, theta_target: float, half_thickness: float) -> float:
    """Time for the mid-plane of an infinite slab to reach theta (series solution)."""
    roots = [
        brentq(lambda z: z * np.tan(z) - bi, n * np.pi + 1e-9, n * np.pi + np.pi / 2 - 1e-9)
        for n in range(40)
    ]
    zeta = np.array(roots)
    coef = 4 * np.sin(zeta) / (2 * zeta + np.sin(2 * zeta))

    def theta(fo: float) -> float:
        return float(np.sum(coef * np.exp(-(zeta**2) * fo))) - theta_target

    fo = brentq(theta, 1e-6, 1e4)
    return fo * half_thickness**2 / heat.Steel().diffusivity


@pytest.mark.parametrize("htc", [300.0, 1500.0, 3000.0])
def test_solver_matches_the_analytic_slab(htc: float) -> None:
    """A wide plate (aspect 12) cools at its centre like an infinite slab."""
    setting = {
        "htc_w_m2k": [htc],
        "thickness_mm": [30.0],
        "t_start_c": [860.0],
        "t_quench_c": [40.0],
    }
    setting = {k: np.array(v) for k, v in setting.items()}
    solved = heat.solve(setting, target_c=300.0, cells=16, aspect=12.0).times_s[0]
    bi = htc * 0.015 / heat.Steel().conductivity
    exact = _slab_core_time(bi, (300.0 - 40.0) / (860.0 - 40.0), 0.015)
    assert solved == pytest.approx(exact, rel=0.02)


def test_torch_and_numpy_solvers_agree() -> None:
    settings = heat.sample_parameters(48, seed=8)
    torch_solution = heat.solve(settings)
    numpy_solution = heat.solve_numpy(settings)
    np.testing.assert_allclose(torch_solution.times_s, numpy_solution.times_s, rtol=1e-4)
    assert torch_solution.cell_updates == numpy_solution.cell_updates > 0
    assert torch_solution.cell_updates_per_s > 0


def test_grid_is_fine_enough_and_physics_is_monotone() -> None:
    settings = heat.sample_parameters(8, seed=9)
    coarse = heat.solve(settings, cells=8).times_s
    fine = heat.solve(settings, cells=16).times_s
    assert np.max(np.abs(coarse / fine - 1)) < 0.01
    base = {k: np.repeat(v[:1], 3) for k, v in settings.items()}
    base["htc_w_m2k"] = np.array([500.0, 1000.0, 2000.0])
    assert np.all(np.diff(heat.solve(base).times_s) < 0), "a stronger quench is faster"


def test_solver_refuses_bad_input() -> None:
    settings = heat.sample_parameters(2, seed=1)
    with pytest.raises(ValueError, match="unstable"):
        heat.solve(settings, fourier=0.45)
    with pytest.raises(ValueError, match="target_c must lie between"):
        heat.solve(settings, target_c=950.0)


def test_temperature_field() -> None:
    setting = {"htc_w_m2k": 1000.0, "thickness_mm": 20.0, "t_start_c": 860.0, "t_quench_c": 40.0}
    early = heat.temperature_field(setting, 5.0, cells=6)
    late = heat.temperature_field(setting, 30.0, cells=6)
    assert early.shape == (12, 24)
    np.testing.assert_allclose(early, early[::-1, ::-1])
    assert 40 < late.min() < late.max() < early.max() < 860
    assert early.max() == early[5:7, 11:13].max(), "the core is the hottest point"
