"""Quenching of a steel plate: a 2D transient heat-conduction solver (PyTorch and NumPy).

Process model (what the notebook explains):

* A long plate of thickness ``H`` and width ``aspect * H`` leaves the furnace at a uniform
  ``t_start_c`` and is quenched in a medium at ``t_quench_c``. Its cross-section obeys the heat
  equation ``dT/dt = alpha * (d2T/dx2 + d2T/dy2)`` with ``alpha = k / (rho * c_p)``.
* All four faces lose heat by convection, ``-k dT/dn = h (T - T_quench)``, where the heat transfer
  coefficient ``h`` (W/m2K) encodes the quenchant: still air ~10-50, oil ~300-1000, polymer
  solutions ~1000-2500, agitated water ~3000+.
* By symmetry only a quarter of the section is computed: zero flux on the two symmetry planes,
  convection on the two outer faces. The quantity of interest is the time until the core (the
  slowest point) has cooled to ``target_c``.
* Scheme: cell-centred finite differences, explicit Euler in time with Fourier number
  ``alpha * dt / dx**2 = fourier`` (stable for ``fourier <= 0.25`` at these Biot numbers); the
  convective face uses the exact series resistance of half a cell and the film,
  ``q = (T - T_quench) / (dx / (2k) + 1 / h)``.
* Everything is written in the dimensionless temperature ``theta = (T - T_quench) / (t_start -
  T_quench)``, so one grid serves a whole batch of process settings: each sample only has its
  own time step and Biot number. Samples that reached the target leave the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

PARAMETERS: dict[str, tuple[float, float]] = {
    "htc_w_m2k": (300.0, 3000.0),  # heat transfer coefficient of the quenchant
    "thickness_mm": (10.0, 50.0),
    "t_start_c": (820.0, 900.0),  # austenitising temperature
    "t_quench_c": (20.0, 80.0),  # quenchant temperature
}


@dataclass(frozen=True)
class Steel:
    """Low-alloy steel, properties averaged over 20-850 degC."""

    conductivity: float = 40.0  # W/(m K)
    density: float = 7850.0  # kg/m3
    heat_capacity: float = 490.0  # J/(kg K)

    @property
    def diffusivity(self) -> float:
        return self.conductivity / (self.density * self.heat_capacity)


@dataclass
class Solution:
    """Time (s) for the core to reach the target, and the work done (for throughput figures)."""

    times_s: np.ndarray
    steps: int
    cell_updates: int
    seconds: float

    @property
    def cell_updates_per_s(self) -> float:
        return self.cell_updates / self.seconds


def sample_parameters(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random process settings inside :data:`PARAMETERS` (heat transfer coefficient log-uniform)."""
    rng = np.random.default_rng(seed)
    out = {name: rng.uniform(lo, hi, n) for name, (lo, hi) in PARAMETERS.items()}
    lo, hi = PARAMETERS["htc_w_m2k"]
    out["htc_w_m2k"] = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return out


@dataclass(frozen=True)
class _Setup:
    """Per-sample quantities of the dimensionless problem."""

    dt: np.ndarray  # time step (s)
    decay: np.ndarray  # (n, ny, nx): 1 - 4 Fo - Fo * g * (number of convective faces)
    theta_target: np.ndarray
    fourier: float


def _setup(
    params: dict[str, np.ndarray],
    target_c: float,
    cells: int,
    aspect: float,
    fourier: float,
    steel: Steel,
) -> _Setup:
    h = np.asarray(params["htc_w_m2k"], dtype=np.float64)
    dx = np.asarray(params["thickness_mm"], dtype=np.float64) * 1e-3 / 2 / cells
    t0, tq = np.asarray(params["t_start_c"]), np.asarray(params["t_quench_c"])
    if np.any(target_c <= tq) or np.any(target_c >= t0):
        raise ValueError("target_c must lie between the quench and the start temperature")
    biot = h * dx / steel.conductivity
    g = 2 * biot / (2 + biot)  # face loss per cell, in units of a neighbour difference
    # Positive coefficients (no overshoot) in the interior, on faces and in the corner:
    # 1 - 4 Fo, 1 - 3 Fo - Fo g and 1 - 2 Fo - 2 Fo g must all be >= 0.
    if fourier * max(4.0, 3.0 + g.max(), 2.0 + 2.0 * g.max()) > 1.0:
        raise ValueError(f"explicit scheme unstable: fourier={fourier}, cell Biot={biot.max():.2f}")
    nx = round(aspect * cells)
    faces = np.zeros((cells, nx))
    faces[-1, :] += 1  # outer face in y (top surface)
    faces[:, -1] += 1  # outer face in x (edge)
    # Replicated ghost cells make the neighbour sum contain the cell itself at every boundary,
    # so the centre coefficient stays 1 - 4 Fo; convection removes Fo * g * theta per face.
    decay = 1 - 4 * fourier - fourier * g[:, None, None] * faces[None]
    return _Setup(
        dt=fourier * dx**2 / steel.diffusivity,
        decay=decay,
        theta_target=(target_c - tq) / (t0 - tq),
        fourier=fourier,
    )


def _crossing(history: np.ndarray, previous: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Fractional step index (within the chunk) where each column first drops to its target."""
    below = history <= target[None, :]
    hit = below.any(axis=0)
    first = np.where(hit, below.argmax(axis=0), -1)
    cols = np.arange(history.shape[1])
    before = np.where(first > 0, history[np.maximum(first - 1, 0), cols], previous)
    after = history[np.maximum(first, 0), cols]
    frac = (before - target) / np.maximum(before - after, 1e-12)
    return np.where(hit, first + frac, np.nan)


def _step(padded: torch.Tensor, decay: torch.Tensor, fourier: float) -> None:
    """One explicit step in place; ``padded`` holds the field with one ghost cell per side."""
    padded[:, 0, 1:-1] = padded[:, 1, 1:-1]  # mirror: zero flux across the symmetry planes
    padded[:, -1, 1:-1] = padded[:, -2, 1:-1]  # outer faces: convection is in ``decay``
    padded[:, :, 0] = padded[:, :, 1]
    padded[:, :, -1] = padded[:, :, -2]
    total = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1]
    total += padded[:, 1:-1, :-2]
    total += padded[:, 1:-1, 2:]
    padded[:, 1:-1, 1:-1].mul_(decay).add_(total, alpha=fourier)


def solve(
    params: dict[str, np.ndarray],
    target_c: float = 300.0,
    cells: int = 8,
    aspect: float = 2.0,
    fourier: float = 0.2,
    steel: Steel | None = None,
    device: str | torch.device = "cpu",
    chunk: int = 200,
    max_steps: int = 200_000,
) -> Solution:
    """Time for the core to cool to ``target_c`` for every process setting in ``params``.

    ``params`` maps the names in :data:`PARAMETERS` to equal-length arrays. ``cells`` is the number
    of cells across half the thickness (8 is within about 1% of a fine grid). Runs on ``device``
    in float32; each chunk of steps synchronises once with the host.
    """
    setup = _setup(params, target_c, cells, aspect, fourier, steel or Steel())
    n, ny, nx = setup.decay.shape
    dev = torch.device(device)
    padded = torch.ones((n, ny + 2, nx + 2), dtype=torch.float32, device=dev)
    decay = torch.as_tensor(setup.decay, dtype=torch.float32, device=dev)
    active = np.arange(n)
    times = np.full(n, np.nan)
    previous = np.ones(n)
    history = torch.empty((chunk, n), dtype=torch.float32, device=dev)
    steps = cell_updates = 0
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    while active.size and steps < max_steps:
        theta = padded[:, 1:-1, 1:-1]
        for i in range(chunk):
            _step(padded, decay, fourier)
            history[i, : active.size] = theta[:, 0, 0]
        hist = history[:, : active.size].cpu().numpy().astype(np.float64)
        cell_updates += chunk * active.size * ny * nx
        crossed = _crossing(hist, previous[active], setup.theta_target[active])
        done = ~np.isnan(crossed)
        times[active[done]] = (steps + crossed[done]) * setup.dt[active[done]]
        previous[active] = hist[-1]
        steps += chunk
        keep = torch.as_tensor(np.flatnonzero(~done), device=dev)
        active = active[~done]
        if done.any() and active.size:
            padded, decay = padded[keep].contiguous(), decay[keep].contiguous()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return Solution(times, steps, cell_updates, time.perf_counter() - start)


def solve_numpy(
    params: dict[str, np.ndarray],
    target_c: float = 300.0,
    cells: int = 8,
    aspect: float = 2.0,
    fourier: float = 0.2,
    steel: Steel | None = None,
    chunk: int = 200,
    max_steps: int = 200_000,
) -> Solution:
    """The same scheme as :func:`solve` in NumPy (float32), as a reference and for benchmarks."""
    setup = _setup(params, target_c, cells, aspect, fourier, steel or Steel())
    n, ny, nx = setup.decay.shape
    padded = np.ones((n, ny + 2, nx + 2), dtype=np.float32)
    decay = setup.decay.astype(np.float32)
    total = np.empty((n, ny, nx), dtype=np.float32)
    active = np.arange(n)
    times = np.full(n, np.nan)
    previous = np.ones(n)
    fo = np.float32(fourier)
    steps = cell_updates = 0
    start = time.perf_counter()
    while active.size and steps < max_steps:
        history = np.empty((chunk, active.size))
        theta = padded[:, 1:-1, 1:-1]
        for i in range(chunk):
            padded[:, 0, 1:-1] = padded[:, 1, 1:-1]
            padded[:, -1, 1:-1] = padded[:, -2, 1:-1]
            padded[:, :, 0] = padded[:, :, 1]
            padded[:, :, -1] = padded[:, :, -2]
            np.add(padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], out=total)
            total += padded[:, 1:-1, :-2]
            total += padded[:, 1:-1, 2:]
            theta *= decay
            total *= fo
            theta += total
            history[i] = theta[:, 0, 0]
        cell_updates += chunk * active.size * ny * nx
        crossed = _crossing(history, previous[active], setup.theta_target[active])
        done = ~np.isnan(crossed)
        times[active[done]] = (steps + crossed[done]) * setup.dt[active[done]]
        previous[active] = history[-1]
        steps += chunk
        active = active[~done]
        if done.any() and active.size:
            padded, decay = padded[~done].copy(), decay[~done].copy()
            total = np.empty((active.size, ny, nx), dtype=np.float32)
    return Solution(times, steps, cell_updates, time.perf_counter() - start)


def temperature_field(
    setting: dict[str, float],
    time_s: float,
    cells: int = 8,
    aspect: float = 2.0,
    fourier: float = 0.2,
    steel: Steel | None = None,
) -> np.ndarray:
    """Temperature (degC) over the whole cross-section after ``time_s`` seconds of quenching.

    ``setting`` holds one value per name in :data:`PARAMETERS`; the quarter solution is
    mirrored, so the result has ``2 * cells`` rows (thickness) and ``2 * aspect * cells`` columns.
    """
    params = {name: np.array([float(setting[name])]) for name in PARAMETERS}
    setup = _setup(
        params,
        (setting["t_start_c"] + setting["t_quench_c"]) / 2,
        cells,
        aspect,
        fourier,
        steel or Steel(),
    )
    padded = torch.ones((1, *(n + 2 for n in setup.decay.shape[1:])), dtype=torch.float64)
    decay = torch.as_tensor(setup.decay)
    for _ in range(round(time_s / setup.dt[0])):
        _step(padded, decay, fourier)
    quarter = padded[0, 1:-1, 1:-1].numpy()
    half = np.concatenate([quarter[:, ::-1], quarter], axis=1)
    theta = np.concatenate([half[::-1], half], axis=0)
    return setting["t_quench_c"] + theta * (setting["t_start_c"] - setting["t_quench_c"])
