"""Exercises of the heat-treatment course. Spoiler warning: the solutions are in this file."""

from __future__ import annotations

import numpy as np

from werkhub_widgets.coursekit import Course, close

course = Course("heat-treatment-course", namespace={"np": np})
check, hint, solution, reference = course.check, course.hint, course.solution, course.reference


def _steel() -> dict[str, float]:
    return {"k": 40.0, "rho": 7850.0, "cp": 490.0}


@course.exercise(
    "diffusivity",
    "Thermal diffusivity",
    answer="alpha",
    hint="Diffusivity is conductivity divided by volumetric heat capacity (density x c_p).",
    solution="alpha = k / (rho * cp)",
    example=_steel,
)
def _diffusivity(alpha: float, k: float, rho: float, cp: float) -> str | None:
    return close(alpha, k / (rho * cp), what="diffusivity")


@course.exercise(
    "biot",
    "Biot number",
    answer="biot",
    hint="Bi = h L / k with L the half thickness in metres: heat leaves through both faces.",
    solution="biot = h * (thickness_mm / 1000 / 2) / k",
    example=lambda: {"h": 800.0, "thickness_mm": 30.0, "k": 40.0},
)
def _biot(biot: float, h: float, thickness_mm: float, k: float) -> str | None:
    expected = h * thickness_mm / 2000 / k
    if abs(float(biot) / expected - 2) < 0.01:
        return "twice too large: L is half the thickness (the plate cools on both faces)"
    return close(biot, expected, what="Biot number")


@course.exercise(
    "lumped",
    "Does the plate cool uniformly?",
    answer="cools_uniformly",
    hint="The usual rule: a body cools nearly uniformly (lumped) when Bi < 0.1.",
    solution="cools_uniformly = bool(biot < 0.1)",
    example=lambda: {"biot": 0.3},
)
def _lumped(cools_uniformly: bool, biot: float) -> str | None:
    if not isinstance(cools_uniformly, bool | np.bool_):
        return "answer True or False"
    if bool(cools_uniformly) == (biot < 0.1):
        return None
    return "compare the Biot number with 0.1: is the inside resistance negligible?"


@course.exercise(
    "time_step",
    "Largest stable time step",
    answer="dt_max",
    hint="The explicit 2D scheme is stable for Fourier numbers alpha dt / dx**2 up to 0.25.",
    solution="dt_max = 0.25 * dx**2 / alpha",
    example=lambda: {"dx": 0.0015 / 1.0, "alpha": 40.0 / (7850.0 * 490.0)},
)
def _time_step(dt_max: float, dx: float, alpha: float) -> str | None:
    expected = 0.25 * dx**2 / alpha
    if abs(float(dt_max) / expected - 2) < 0.01:
        return "that is the 1D limit (0.5); in 2D a cell has four neighbours, so it is 0.25"
    return close(dt_max, expected, what="time step")


def _rod() -> dict[str, object]:
    rng = np.random.default_rng(1)
    return {"temperature": 20 + 800 * rng.random(12), "fo": 0.3}


@course.exercise(
    "explicit_step",
    "One explicit step along a rod",
    answer="new_temperature",
    hint=(
        "Interior points move by fo * (left - 2 * centre + right); keep both end values as they "
        "are. Slices like temperature[2:] and temperature[:-2] do it without a loop."
    ),
    solution="""
new_temperature = temperature.copy()
new_temperature[1:-1] = temperature[1:-1] + fo * (
    temperature[2:] - 2 * temperature[1:-1] + temperature[:-2]
)
""",
    example=_rod,
)
def _explicit_step(new_temperature: np.ndarray, temperature: np.ndarray, fo: float) -> str | None:
    new_temperature = np.asarray(new_temperature, dtype=float)
    if new_temperature.shape != temperature.shape:
        return f"expected an array of shape {temperature.shape}, got {new_temperature.shape}"
    expected = temperature.copy()
    expected[1:-1] += fo * (temperature[2:] - 2 * temperature[1:-1] + temperature[:-2])
    if not np.allclose(new_temperature[[0, -1]], temperature[[0, -1]]):
        return "the two end values must stay as they are (fixed-temperature ends)"
    if np.allclose(new_temperature, expected):
        return None
    if np.allclose(new_temperature[1:-1], expected[1:-1] - temperature[1:-1]):
        return "you computed the change; add it to the old temperature"
    return "interior values differ from fo * (left - 2 centre + right) added to the centre"


@course.exercise(
    "lumped_time",
    "Quench time if the plate cooled uniformly",
    answer="lumped_time_s",
    hint=(
        "Uniform cooling: T - T_q decays like exp(-t / tau), tau = rho c_p (V / A) / h, and for a "
        "plate cooled on both faces V / A is half the thickness. Solve for the time at which "
        "T reaches target_c."
    ),
    solution="""
tau = rho * cp * (thickness_mm / 1000 / 2) / h
lumped_time_s = tau * np.log((t_start_c - t_quench_c) / (target_c - t_quench_c))
""",
    example=lambda: {
        **_steel(),
        "h": 800.0,
        "thickness_mm": 30.0,
        "t_start_c": 860.0,
        "t_quench_c": 40.0,
        "target_c": 300.0,
    },
)
def _lumped_time(
    lumped_time_s: float,
    k: float,
    rho: float,
    cp: float,
    h: float,
    thickness_mm: float,
    t_start_c: float,
    t_quench_c: float,
    target_c: float,
) -> str | None:
    tau = rho * cp * thickness_mm / 2000 / h
    expected = tau * np.log((t_start_c - t_quench_c) / (target_c - t_quench_c))
    return close(lumped_time_s, expected, what="time")
