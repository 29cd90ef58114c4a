# %% [markdown]
# # Digital twin of a quench: solver, neural surrogate, optimisation
#
# A steel plate leaves the furnace and is quenched. How long until its core is
# cold enough for the next step, and how gently can we quench (less distortion,
# less cracking) and still meet the cycle time? This notebook answers with a
# **physics solver** (the 2D heat equation, vectorised in PyTorch, on the GPU when
# one is booked), trains a **neural surrogate** on solver runs that answers in
# microseconds, explores it with **what-if sliders**, and **optimises** the quench
# with it, then checks the optimum with the solver.
#
# What you get: the accuracy and speed of the surrogate against the solver, a
# process map, the recommended quench, an MLflow run, and the surrogate registered
# in the MLflow Model Registry, ready to serve as an endpoint. About 15 s on a CPU.
#
# **To check the twin against your own trials**, see *Use your own data* in
# section 1 or set the `data_path` parameter.

# %% tags=["parameters"]
n_train: int = 512  # solver runs to train the surrogate on
n_test: int = 128  # held-out solver runs to score it
target_c: float = 300.0  # the core must cool below this temperature (degC)
cells: int = 8  # grid cells across half the plate thickness
aspect: float = 2.0  # plate width / thickness
hidden: int = 64  # neurons per hidden layer of the surrogate
iterations: int = 1000  # surrogate training steps (full batch)
learning_rate: float = 0.003
cycle_time_s: float = 60.0  # optimisation: the quench must finish within this time
opt_thickness_mm: float = 30.0  # optimisation: plate thickness
opt_t_start_c: float = 860.0  # optimisation: furnace temperature
data_path: str = ""  # CSV or Parquet with your own quench trials (see section 1)
seed: int = 0
device_name: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
cpu_threads: int = 2
registered_model: str = "heat-treatment-surrogate"  # registry name ("<you>~" added); "": none
mlflow_experiment: str = "heat-treatment-twin"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
import copy
import time

import heat
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from torch import nn
from tqdm.auto import tqdm

from werkhub_widgets.templatekit import (
    parameters,
    pinned,
    quality_gate,
    register_champion,
    set_up,
    start_tracking,
)

# %matplotlib inline
started = time.perf_counter()
rng = set_up(seed)
torch.set_num_threads(cpu_threads)
torch.manual_seed(seed)
if device_name == "auto":  # the GPU of your booking when the server has one
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
else:
    device = torch.device(device_name)

# %% jupyter={"source_hidden": true}
# Workbench plumbing (werkhub_widgets.templatekit): MLflow tracking and the time it costs,
# figures shown once and logged at the end, the results file, and the parameters
# logged to the run (expand to read).
tracking = start_tracking("heat-treatment-twin", mlflow_experiment, results_path, started)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir, log_history = tracking.show, tracking.figure_dir, tracking.log_history
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## 1. The process and its physics
#
# The solver lives in `heat.py` in this folder. The plate (thickness *H*, width
# `aspect` × *H*, long enough that the length does not matter) starts at the
# furnace temperature *T₀* and cools in a quenchant at *T_q*:
#
# * Inside, heat diffuses: ∂T/∂t = α (∂²T/∂x² + ∂²T/∂y²), with diffusivity
#   α = k / (ρ c_p) ≈ 1.0·10⁻⁵ m²/s for low-alloy steel (k = 40 W/m K,
#   ρ = 7850 kg/m³, c_p = 490 J/kg K, averaged over the temperature range).
# * At every face the quenchant removes heat by convection: −k ∂T/∂n = h (T − T_q).
#   The **heat transfer coefficient** *h* is what distinguishes quenchants: still
#   air 10-50 W/m²K, oil 300-1000, polymer solutions 1000-2500, water 3000+.
# * The **Biot number** Bi = h (H/2) / k compares the resistance inside the plate
#   with that of the surface film. For Bi ≪ 0.1 the plate cools almost uniformly;
#   for larger Bi the surface is much colder than the core, which is what causes
#   distortion and quench cracks.
#
# Numerics: by symmetry one quarter of the cross-section is enough. Cell-centred
# finite differences with `cells` cells across the half thickness, explicit time
# steps at Fourier number α Δt / Δx² = 0.2 (stable up to 0.25). All settings of a
# batch are solved at once as one tensor, each with its own time step and Biot
# number; settings whose core has reached `target_c` leave the batch. The table
# checks that `cells` is fine enough by comparing with a grid twice as fine.

# %%
check = heat.sample_parameters(8, seed + 99)
coarse = heat.solve(check, target_c, cells, aspect, device=device).times_s
fine = heat.solve(check, target_c, 2 * cells, aspect, device=device).times_s
grid_error = float(np.max(np.abs(coarse / fine - 1)))
pd.DataFrame(check).assign(
    **{f"time ({cells} cells)": coarse, f"time ({2 * cells} cells)": fine}
).round(1)

# %%
example = {"htc_w_m2k": 800.0, "thickness_mm": 30.0, "t_start_c": 860.0, "t_quench_c": 40.0}
fig_field, axes = plt.subplots(1, 3, figsize=(12, 2.8))
for ax, seconds in zip(axes, [5, 20, 60], strict=True):
    field = heat.temperature_field(example, seconds, cells, aspect)
    image = ax.imshow(field, cmap="inferno", vmin=40, vmax=860, aspect="equal")
    ax.set(title=f"after {seconds} s: core {field.max():.0f} °C", xticks=[], yticks=[])
fig_field.colorbar(image, ax=axes, label="°C", shrink=0.9)
fig_field.suptitle("Cross-section of a 30 mm plate quenched in oil (h = 800 W/m²K)")
show(fig_field, "temperature_field")

# %% [markdown]
# ### ▶ Use your own data
#
# A twin is only as good as its agreement with the real furnace. If you have quench
# trials (thermocouple in the core), put them in a CSV or Parquet file with the
# columns `htc_w_m2k`, `thickness_mm`, `t_start_c`, `t_quench_c` and
# `measured_time_s` (time for the core to reach `target_c`), and set
# `data_path = "my_trials.csv"`. This cell then compares solver and trials. If they
# disagree systematically, calibrate *h* of your quenchant (it depends on
# agitation and temperature) or the material in `heat.Steel` before trusting the
# rest of the notebook.

# %%
trial_error = None
if data_path:
    read = pd.read_parquet if data_path.endswith(".parquet") else pd.read_csv
    trials = read(data_path)
    settings = {name: trials[name].to_numpy(float) for name in heat.PARAMETERS}
    trials["twin_time_s"] = heat.solve(settings, target_c, cells, aspect, device=device).times_s
    trials["error"] = trials["twin_time_s"] / trials["measured_time_s"] - 1
    trial_error = float(trials["error"].abs().mean())
    display(trials.round(3))
    display(Markdown(f"Mean deviation twin vs. trials: **{trial_error:.1%}**"))

# %% [markdown]
# ## 2. Solver runs: the training data
#
# We sample `n_train` + `n_test` process settings inside the ranges of
# `heat.PARAMETERS` (*h* log-uniformly, because quenchants span a factor of ten)
# and solve them all. The test settings are drawn independently and are never used
# for training.

# %%
train_settings = heat.sample_parameters(n_train, seed)
test_settings = heat.sample_parameters(n_test, seed + 1)
solved_train = heat.solve(train_settings, target_c, cells, aspect, device=device)
solved_test = heat.solve(test_settings, target_c, cells, aspect, device=device)
solver_per_query_s = solved_train.seconds / n_train
single = {name: values[:1] for name, values in test_settings.items()}
solver_single_s = min(
    heat.solve(single, target_c, cells, aspect, device=device).seconds for _ in range(3)
)
print(
    f"{n_train + n_test} solver runs on {device}: "
    f"{solved_train.cell_updates_per_s:.3g} cell updates/s, "
    f"{1000 * solver_per_query_s:.2f} ms per setting in a batch, "
    f"{1000 * solver_single_s:.1f} ms for a single setting"
)

fig_data, ax = plt.subplots(figsize=(7, 4))
points = ax.scatter(
    train_settings["htc_w_m2k"],
    solved_train.times_s,
    c=train_settings["thickness_mm"],
    cmap="viridis",
    s=10,
)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="heat transfer coefficient h (W/m²K)",
    ylabel=f"time until core < {target_c:.0f} °C (s)",
    title="Solver runs: thicker plates and gentler quenchants take longer",
)
fig_data.colorbar(points, label="thickness (mm)")
show(fig_data, "solver_runs")


# %% [markdown]
# ## 3. A neural surrogate
#
# A small multilayer perceptron maps the four process parameters to the
# time-to-target. Two choices make it accurate with a few hundred runs: the inputs
# *h* and *H* enter as logarithms and the output is the logarithm of the time, so
# the network learns smooth, nearly linear relations (for a thin plate, time ∝ H / h);
# and inputs and outputs are standardised with training-set statistics.


# %%
def encode(settings: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack(
        [
            np.log(settings["htc_w_m2k"]),
            np.log(settings["thickness_mm"]),
            settings["t_start_c"],
            settings["t_quench_c"],
        ],
        axis=1,
    )


x_mean, x_std = encode(train_settings).mean(0), encode(train_settings).std(0)
y_log = np.log(solved_train.times_s)
y_mean, y_std = float(y_log.mean()), float(y_log.std())


def to_tensor(settings: dict[str, np.ndarray]) -> torch.Tensor:
    x = (encode(settings) - x_mean) / x_std
    return torch.as_tensor(x, dtype=torch.float32, device=device)


surrogate = nn.Sequential(
    nn.Linear(4, hidden),
    nn.SiLU(),
    nn.Linear(hidden, hidden),
    nn.SiLU(),
    nn.Linear(hidden, 1),
).to(device)
x_train = to_tensor(train_settings)
y_train = torch.as_tensor((y_log - y_mean) / y_std, dtype=torch.float32, device=device)
optimiser = torch.optim.Adam(surrogate.parameters(), lr=learning_rate)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, iterations)
history = []
t_train = time.perf_counter()
for step in tqdm(range(iterations), desc="training", leave=False):
    loss = nn.functional.mse_loss(surrogate(x_train).squeeze(1), y_train)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    schedule.step()
    if step % 50 == 0 or step == iterations - 1:
        history.append({"train_loss": loss.item()})
train_seconds = time.perf_counter() - t_train


def predict_time(settings: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out = surrogate(to_tensor(settings)).squeeze(1).cpu().numpy()
    return np.exp(out * y_std + y_mean)


# %%
predicted = predict_time(test_settings)
rel_error = np.abs(predicted / solved_test.times_s - 1)

many = heat.sample_parameters(20000, seed + 2)
predict_time(many)  # warm-up
t0 = time.perf_counter()
predict_time(many)
surrogate_per_query_s = (time.perf_counter() - t0) / 20000
one = {name: values[:1] for name, values in many.items()}
single_times = []
for _ in range(50):
    t0 = time.perf_counter()
    predict_time(one)
    single_times.append(time.perf_counter() - t0)
surrogate_single_s = float(np.median(single_times))
speedup_batch = solver_per_query_s / surrogate_per_query_s
speedup_single = solver_single_s / surrogate_single_s

fig_parity, (ax, ax_hist) = plt.subplots(1, 2, figsize=(11, 4))
ax.scatter(solved_test.times_s, predicted, s=10)
lims = [solved_test.times_s.min() * 0.9, solved_test.times_s.max() * 1.1]
ax.plot(lims, lims, color="black", linewidth=1)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="solver (s)",
    ylabel="surrogate (s)",
    title="Held-out settings: surrogate vs. solver",
)
ax_hist.hist(100 * rel_error, bins=30, color="tab:blue")
ax_hist.set(xlabel="relative error (%)", ylabel="settings", title="Error distribution")
show(fig_parity, "surrogate_parity")
pd.DataFrame(
    {
        "mean relative error": [f"{rel_error.mean():.2%}"],
        "95th percentile": [f"{np.quantile(rel_error, 0.95):.2%}"],
        "worst case": [f"{rel_error.max():.2%}"],
        "speed-up, one query": [f"{speedup_single:,.0f} times"],
        "speed-up, batched": [f"{speedup_batch:,.0f} times"],
    },
    index=["surrogate vs. solver"],
).T


# %% [markdown]
# ## 4. What if?
#
# Move the sliders to see the predicted quench time for any setting: this is what
# the surrogate is for. (Sliders need a live notebook; in the report the process
# map below shows the same information.) The map shows, for the furnace and
# quenchant temperatures of the optimisation, which combinations of plate thickness
# and quenchant reach the target within the cycle time (white line).


# %%
def what_if(htc_w_m2k=800.0, thickness_mm=30.0, t_start_c=860.0, t_quench_c=40.0):
    setting = {
        "htc_w_m2k": np.array([htc_w_m2k]),
        "thickness_mm": np.array([thickness_mm]),
        "t_start_c": np.array([t_start_c]),
        "t_quench_c": np.array([t_quench_c]),
    }
    seconds = float(predict_time(setting)[0])
    verdict = "meets" if seconds <= cycle_time_s else "misses"
    return (
        f"core below {target_c:.0f} °C after {seconds:.1f} s: "
        f"{verdict} the {cycle_time_s:.0f} s cycle time"
    )


# sliders and a text answer (no Output widget: runs the same in JupyterLab and
# in scheduled, headless runs, where the middle setting is printed instead)
ranges = heat.PARAMETERS
sliders = {
    name: widgets.FloatSlider(
        value=float(np.mean(ranges[name])),
        min=ranges[name][0],
        max=ranges[name][1],
        description=name,
        continuous_update=False,
        style={"description_width": "initial"},
    )
    for name in ranges
}
answer = widgets.Label()


def show_answer(_change=None):
    answer.value = what_if(**{name: s.value for name, s in sliders.items()})


for slider in sliders.values():
    slider.observe(show_answer, names="value")
show_answer()
print(answer.value)
display(widgets.VBox([*sliders.values(), answer]))

# %%
h_grid = np.geomspace(*heat.PARAMETERS["htc_w_m2k"], 120)
thickness_grid = np.linspace(*heat.PARAMETERS["thickness_mm"], 100)
hh, tt = np.meshgrid(h_grid, thickness_grid)
grid = {
    "htc_w_m2k": hh.ravel(),
    "thickness_mm": tt.ravel(),
    "t_start_c": np.full(hh.size, opt_t_start_c),
    "t_quench_c": np.full(hh.size, 40.0),
}
time_map = predict_time(grid).reshape(hh.shape)
fig_map, ax = plt.subplots(figsize=(8, 4.5))
filled = ax.contourf(hh, tt, time_map, levels=20, cmap="viridis")
ax.contour(hh, tt, time_map, levels=[cycle_time_s], colors="white", linewidths=2)
ax.set(
    xscale="log",
    xlabel="heat transfer coefficient h (W/m²K)",
    ylabel="plate thickness (mm)",
    title=f"Process map: time to {target_c:.0f} °C (quenchant at 40 °C)",
)
fig_map.colorbar(filled, label="seconds")
show(fig_map, "process_map")

# %% [markdown]
# ## 5. Optimisation: the gentlest quench that meets the cycle time
#
# For a plate of `opt_thickness_mm` from a furnace at `opt_t_start_c`, we look for
# the quenchant (*h*) and bath temperature (*T_q*) with the **lowest initial
# surface heat flux** h (T₀ − T_q), a simple proxy for thermal stress and
# distortion, whose core still reaches `target_c` within `cycle_time_s`. With the
# surrogate we can afford to evaluate every one of 20,000 candidates; the solver
# then **verifies** the winner, as one always should before changing a process.

# %%
h_candidates, tq_candidates = np.meshgrid(
    np.geomspace(*heat.PARAMETERS["htc_w_m2k"], 200),
    np.linspace(*heat.PARAMETERS["t_quench_c"], 100),
)
candidates = {
    "htc_w_m2k": h_candidates.ravel(),
    "thickness_mm": np.full(h_candidates.size, opt_thickness_mm),
    "t_start_c": np.full(h_candidates.size, opt_t_start_c),
    "t_quench_c": tq_candidates.ravel(),
}
t0 = time.perf_counter()
candidate_times = predict_time(candidates)
search_seconds = time.perf_counter() - t0
flux = candidates["htc_w_m2k"] * (opt_t_start_c - candidates["t_quench_c"])
feasible = candidate_times <= cycle_time_s
if feasible.any():
    best = int(np.flatnonzero(feasible)[np.argmin(flux[feasible])])
else:
    best = int(np.argmin(candidate_times))  # nothing meets it: the fastest quench
optimum = {name: values[best : best + 1] for name, values in candidates.items()}
optimum_predicted_s = float(candidate_times[best])
optimum_solver_s = float(heat.solve(optimum, target_c, cells, aspect, device=device).times_s[0])
optimum_error = abs(optimum_predicted_s / optimum_solver_s - 1)

fig_optimum, ax = plt.subplots(figsize=(8, 4.5))
ax.scatter(
    candidates["htc_w_m2k"][~feasible],
    candidates["t_quench_c"][~feasible],
    s=2,
    color="lightgrey",
    label="misses the cycle time",
)
shade = ax.scatter(
    candidates["htc_w_m2k"][feasible],
    candidates["t_quench_c"][feasible],
    s=2,
    c=flux[feasible] / 1e6,
    cmap="coolwarm",
    label="meets it",
)
ax.scatter(
    optimum["htc_w_m2k"],
    optimum["t_quench_c"],
    s=200,
    marker="*",
    color="black",
    label="recommended",
)
ax.set(
    xscale="log",
    xlabel="heat transfer coefficient h (W/m²K)",
    ylabel="quenchant temperature (°C)",
    title=f"{opt_thickness_mm:.0f} mm plate, {cycle_time_s:.0f} s cycle time",
)
fig_optimum.colorbar(shade, label="initial surface heat flux (MW/m²)")
legend = ax.legend(loc="upper left")
for handle in legend.legend_handles[:2]:
    handle.set_sizes([20])
show(fig_optimum, "optimisation")
display(
    Markdown(
        f"**Recommended quench**: h = {optimum['htc_w_m2k'][0]:.0f} W/m²K with the "
        f"bath at {optimum['t_quench_c'][0]:.0f} °C. Surrogate: "
        f"{optimum_predicted_s:.1f} s, solver check: {optimum_solver_s:.1f} s "
        f"({optimum_error:.1%} apart); {h_candidates.size:,} candidates searched "
        f"in {1000 * search_seconds:.0f} ms."
        + ("" if feasible.any() else " **No setting meets the cycle time.**")
    )
)


# %% [markdown]
# ## 6. Summary and tracking
#
# Parameters, metrics and figures are stored in MLflow; section 7 adds the surrogate.


# %%
metrics = {
    "surrogate_mean_rel_error": float(rel_error.mean()),
    "surrogate_p95_rel_error": float(np.quantile(rel_error, 0.95)),
    "surrogate_max_rel_error": float(rel_error.max()),
    "speedup_single_query": speedup_single,
    "speedup_batched": speedup_batch,
    "speedup": min(speedup_single, speedup_batch),
    "solver_cell_updates_per_s": solved_train.cell_updates_per_s,
    "solver_ms_per_query": 1000 * solver_per_query_s,
    "surrogate_us_per_query": 1e6 * surrogate_per_query_s,
    "grid_rel_error": grid_error,
    "optimum_htc_w_m2k": float(optimum["htc_w_m2k"][0]),
    "optimum_t_quench_c": float(optimum["t_quench_c"][0]),
    "optimum_solver_time_s": optimum_solver_s,
    "optimum_surrogate_rel_error": optimum_error,
    "train_seconds": train_seconds,
}
if trial_error is not None:
    metrics["trial_mean_rel_error"] = trial_error
with mlflow_timer():
    mlflow.log_metrics(metrics)
    log_history(history)
    mlflow.log_artifacts(str(figure_dir), "figures")
pd.DataFrame(
    {
        "value": [
            f"{rel_error.mean():.2%} (worst {rel_error.max():.2%})",
            f"{metrics['speedup']:,.0f} times faster than the solver",
            f"h = {optimum['htc_w_m2k'][0]:.0f} W/m²K, bath {optimum['t_quench_c'][0]:.0f} °C",
            f"{optimum_solver_s:.1f} s (limit {cycle_time_s:.0f} s)",
        ]
    },
    index=[
        "surrogate error (held-out)",
        "surrogate speed",
        "recommended quench",
        "quench time, solver-verified",
    ],
)

# %% [markdown]
# ## 7. The surrogate, ready to serve
#
# The surrogate is logged as an **MLflow Model** that takes process settings (the
# columns `htc_w_m2k`, `thickness_mm`, `t_start_c` and `t_quench_c`, in the units
# of section 1) and answers with the seconds until the core is below `target_c`,
# doing the encoding and scaling of section 3 itself. It carries a *signature*
# (those columns and their types: a request without them is refused) and an
# *input example* (three held-out settings, which an endpoint uses as its first
# test request). Stay within the ranges of `heat.PARAMETERS`: the surrogate has
# seen nothing outside them.
#
# It is registered in the MLflow Model Registry as `registered_model` (in the
# workbench under your name: `<you>~heat-treatment-surrogate`); every run adds a
# version. When the run meets the template's **quality gates** (`gates` in
# `template.yaml`: at most 5 % worst-case error against the solver and at least a
# hundred times faster), the alias **champion** moves to this version, and
# endpoints serving `models:/<name>@champion` pick it up. A run below the gates is
# registered without the alias, so the champion stays the last good one.


# %%
class QuenchTime(mlflow.pyfunc.PythonModel):
    """Process settings in; seconds until the core is below target_c out."""

    def __init__(self, network, scaling):
        self.network, self.scaling = network.eval(), scaling

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        x_mu, x_sigma, y_mu, y_sigma = self.scaling
        x = torch.as_tensor((encode(model_input) - x_mu) / x_sigma, dtype=torch.float32)
        with torch.no_grad():
            out = self.network(x).squeeze(1).numpy()
        return pd.DataFrame({"time_s": np.exp(out * y_sigma + y_mu)})


# a CPU copy: the sliders above keep using the surrogate where it is
served = QuenchTime(copy.deepcopy(surrogate).cpu(), (x_mean, x_std, y_mean, y_std))
input_example = pd.DataFrame(test_settings).head(3)
gate = quality_gate(metrics)  # the gates in template.yaml
with mlflow_timer():
    model_info = mlflow.pyfunc.log_model(
        name="model",
        python_model=served,
        signature=mlflow.models.infer_signature(input_example, served.predict(None, input_example)),
        input_example=input_example,
        pip_requirements=pinned("torch", "numpy", "pandas", "cloudpickle"),
    )
    registered = None
    if registered_model:
        registered = register_champion(model_info, registered_model, gate.passed, gate=str(gate))
display(Markdown(registered.note() if registered else "Model logged, not registered."))

# %% jupyter={"source_hidden": true}
# Workbench plumbing: end the MLflow run, write the results file, say where the run is.
tracking.finish(params, metrics, registered)
