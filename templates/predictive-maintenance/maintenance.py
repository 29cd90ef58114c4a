# %% [markdown]
# # Predictive maintenance: remaining useful life of a pump fleet
#
# From the vibration, temperature and pressure history of each pump, this notebook
# learns to predict its **remaining useful life** (RUL, in operating cycles) and then
# asks the question that matters to a maintenance manager: *with these predictions,
# when should we stop a pump, and what does that save compared with running to
# failure or replacing on a fixed schedule?*
#
# What you get: RUL accuracy against a naive baseline, prediction plots for
# individual pumps, a cost curve over alarm thresholds with the recommended one,
# an MLflow run, and the model registered in the MLflow Model Registry, ready to
# serve as an endpoint. Runs in well under a minute on a CPU.
#
# **To use your own data**, see *Use your own data* in section 1 or set the
# `data_path` parameter.

# %% tags=["parameters"]
n_units: int = 200  # pumps in the simulated fleet, each run until it fails
test_fraction: float = 0.25  # share of pumps held out for the final scores
val_fraction: float = 0.15  # share of pumps used to choose the alarm threshold
noise: float = 1.0  # sensor noise scale (1.0 realistic, 0.0 none)
window: int = 10  # cycles in the rolling mean of each sensor
model_kind: str = "boosting"  # "boosting" (scikit-learn) or "mlp" (PyTorch, uses the GPU)
max_iter: int = 300  # boosting rounds
learning_rate: float = 0.05  # boosting learning rate
mlp_epochs: int = 60
cost_failure: float = 20000.0  # EUR: unplanned failure (repair, secondary damage, lost production)
cost_preventive: float = 3000.0  # EUR: planned replacement during a scheduled stop
lead_time: int = 5  # cycles between an alarm and the planned stop
data_path: str = ""  # CSV or Parquet file with your own run-to-failure histories
seed: int = 0
device_name: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
cpu_threads: int = 2
registered_model: str = "remaining-life-regressor"  # registry name ("<you>~" added); "": none
mlflow_experiment: str = "predictive-maintenance"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
import time

import fleet
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from sklearn.ensemble import HistGradientBoostingRegressor
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
tracking = start_tracking("predictive-maintenance", mlflow_experiment, results_path, started)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir, log_history = tracking.show, tracking.figure_dir, tracking.log_history
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## 1. The fleet and how pumps wear out
#
# The histories come from `fleet.py` in this folder, a degradation model of
# centrifugal pumps:
#
# * Each pump has a hidden **wear state** *w* that starts small and means failure
#   at *w* = 1. Every cycle it grows in proportion to the wear already there (a
#   damaged bearing race damages itself faster), times the pump's own wear rate and
#   the load of the current operating regime. Pumps that were installed with more
#   **misalignment** wear faster, and they also vibrate a little more from day one.
# * Pumps switch between three **operating regimes** (low, nominal, high duty).
#   The regime moves every sensor's baseline, and high duty wears the pump faster.
# * Sensors: **vibration** (RMS velocity, grows with the square of the wear),
#   **bearing temperature** (ambient drift + load + friction from wear) and
#   **discharge pressure** (head lost to internal wear), all with noise.
#
# Every pump runs until it fails, so for every cycle we know the true RUL. Pumps
# (not rows!) are split into training, validation and test sets: rows of one pump
# are strongly correlated, and splitting rows would let the model peek at the test
# pumps during training.

# %%
histories = fleet.simulate_fleet(n_units, seed, noise)

# %% [markdown]
# ### ▶ Use your own data
#
# Export your run-to-failure histories to a CSV or Parquet file with one row per
# machine and cycle (a day, a shift, an operating hour...) and the columns `unit`,
# `cycle`, `regime` (an integer operating mode; use 0 everywhere if you have only
# one), `vibration_mm_s`, `bearing_temp_c` and `pressure_bar` (rename your sensors
# to these names, or edit `fleet.SENSORS`). Only machines that actually failed
# belong here: the RUL is computed as the last cycle minus the cycle. Then set
# `data_path = "my_histories.parquet"`; everything after this cell works unchanged.

# %%
if data_path:
    histories = fleet.load_histories(data_path)

units = rng.permutation(histories["unit"].unique())
n_test = max(1, round(test_fraction * len(units)))
n_val = max(1, round(val_fraction * len(units)))
test_units, val_units = units[:n_test], units[n_test : n_test + n_val]
train_units = units[n_test + n_val :]
split = {"train": train_units, "validation": val_units, "test": test_units}
life = histories.groupby("unit")["cycle"].max()
pd.DataFrame.from_dict(
    {
        name: {
            "pumps": len(ids),
            "cycles": int(life[ids].sum()),
            "mean life": round(life[ids].mean(), 1),
            "shortest life": int(life[ids].min()),
            "longest life": int(life[ids].max()),
        }
        for name, ids in split.items()
    },
    orient="index",
)

# %%
example = histories[histories["unit"] == train_units[0]]
fig_history, axes = plt.subplots(2, 2, figsize=(11, 6))
colours = np.array(["tab:green", "tab:blue", "tab:red"])
for ax, sensor in zip(axes.flat, fleet.SENSORS, strict=False):
    ax.scatter(example["cycle"], example[sensor], c=colours[example["regime"]], s=6)
    ax.set(title=sensor, xlabel="cycle")
for regime, name in enumerate(fleet.REGIMES):
    axes[0, 0].scatter([], [], c=colours[regime], label=f"{name} duty")
axes[0, 0].legend(loc="upper left")
axes[1, 1].hist(life[train_units], bins=20, color="grey")
axes[1, 1].set(title="Life of the training pumps", xlabel="cycles to failure")
fig_history.suptitle(f"Pump {train_units[0]}: sensor history until failure")
show(fig_history, "history")

# %% [markdown]
# ## 2. Features: take the operating regime out
#
# The colours above show the problem: the regime moves the sensors more than wear
# does until late in life. So each reading is first **standardised against the
# healthy behaviour of its regime** (mean and spread over the first 30 cycles of
# the training pumps), which turns "high vibration" into "high vibration *for this
# duty*". Then, per pump, a rolling mean over `window` cycles removes noise and its
# change over the last `window` cycles gives the trend. Only past and present
# cycles are used, so the same features can be computed online. The pump's age is
# a feature too.

# %%
train = histories[histories["unit"].isin(train_units)]
baseline = fleet.regime_baseline(train)


def features_of(units):
    rows = histories[histories["unit"].isin(units)]
    return fleet.add_features(rows, baseline, window), rows["rul"].to_numpy(), rows


x_train, y_train, _ = features_of(train_units)
x_val, y_val, val_rows = features_of(val_units)
x_test, y_test, test_rows = features_of(test_units)

# %% [markdown]
# ## 3. Remaining-useful-life model
#
# **Baseline**: without sensors, the best guess is the average life of the training
# pumps minus the current age (never below zero). The model has to beat that.
#
# **Model**: gradient-boosted regression trees (`model_kind = "boosting"`) are the
# workhorse for tabular sensor data; a small neural network (`"mlp"`, PyTorch,
# trained on the GPU when there is one) is the alternative. Both are scored by the
# root-mean-square error (RMSE) of the predicted RUL on the test pumps, over every
# cycle of their lives.

# %%
history = []
t_train = time.perf_counter()
if model_kind == "boosting":
    model = HistGradientBoostingRegressor(
        max_iter=max_iter, learning_rate=learning_rate, random_state=seed
    )
    model.fit(x_train, y_train)

    def predict(x: pd.DataFrame) -> np.ndarray:
        return np.clip(model.predict(x), 0, None)

elif model_kind == "mlp":
    mean, std = x_train.mean().to_numpy(), x_train.std().to_numpy() + 1e-9
    scale = float(y_train.mean())

    def to_tensor(x: pd.DataFrame) -> torch.Tensor:
        values = ((x.to_numpy() - mean) / std).astype(np.float32)
        return torch.from_numpy(values).to(device)

    model = nn.Sequential(
        nn.Linear(x_train.shape[1], 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
    ).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt = to_tensor(x_train)
    yt = torch.tensor(y_train / scale, dtype=torch.float32, device=device)
    for _ in tqdm(range(mlp_epochs), desc="training", leave=False):
        order = torch.randperm(len(yt), device=device)
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            loss = nn.functional.mse_loss(model(xt[idx]).squeeze(1), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        history.append({"train_loss": loss.item()})

    def predict(x: pd.DataFrame) -> np.ndarray:
        with torch.no_grad():
            out = model(to_tensor(x)).squeeze(1).cpu().numpy()
        return np.clip(out * scale, 0, None)

else:
    raise ValueError(f"model_kind must be 'boosting' or 'mlp', not {model_kind!r}")
train_seconds = time.perf_counter() - t_train

mean_life = float(life[train_units].mean())


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - true) ** 2)))


pred_test = predict(x_test)
baseline_test = np.clip(mean_life - test_rows["cycle"].to_numpy(), 0, None)
rmse_model, rmse_baseline = rmse(pred_test, y_test), rmse(baseline_test, y_test)
late = y_test <= 50
pd.DataFrame(
    {
        "RMSE, all cycles": [rmse_model, rmse_baseline],
        "RMSE, last 50 cycles": [
            rmse(pred_test[late], y_test[late]),
            rmse(baseline_test[late], y_test[late]),
        ],
    },
    index=[f"model ({model_kind})", "baseline (mean life - age)"],
).round(1)

# %%
fig_predictions, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharey=True)
for ax, unit in zip(axes, test_units[:4], strict=False):
    rows = (test_rows["unit"] == unit).to_numpy()
    cycles = test_rows["cycle"].to_numpy()[rows]
    ax.plot(cycles, y_test[rows], color="black", label="true RUL")
    ax.plot(cycles, pred_test[rows], color="tab:blue", label="model")
    ax.plot(cycles, baseline_test[rows], color="grey", linestyle=":", label="baseline")
    ax.set(title=f"pump {unit}", xlabel="cycle")
axes[0].set_ylabel("remaining useful life (cycles)")
axes[0].legend()
fig_predictions.suptitle("Predicted vs. true remaining life of four test pumps")
show(fig_predictions, "predictions")
display(
    Markdown(
        f"RMSE **{rmse_model:.1f}** cycles against **{rmse_baseline:.1f}** for the "
        f"mean-life baseline: **{1 - rmse_model / rmse_baseline:.0%} lower**."
    )
)


# %% [markdown]
# ## 4. Maintenance policy: when to stop a pump
#
# The policy: raise an **alarm** as soon as the predicted RUL drops to a threshold;
# the pump is replaced in a planned stop `lead_time` cycles later (cost
# `cost_preventive`), unless it fails first (cost `cost_failure`). A low threshold
# risks failures, a high one throws away useful life. What counts is the **cost
# per operating cycle** over many replacement cycles (total cost / total cycles
# run), compared with:
#
# * **run to failure**: never stop early;
# * **fixed-age replacement**: replace every pump at the same age, the best age
#   chosen from the training pumps' lives;
# * **perfect foresight**: a planned stop exactly before every failure (a lower
#   bound no policy reaches).
#
# The threshold is chosen on the validation pumps and scored on the test pumps.


# %%
def policy_cost(rows: pd.DataFrame, pred: np.ndarray, threshold: float):
    """Cost per 1000 cycles, failures and planned stops for an alarm threshold."""
    frame = rows[["unit", "cycle"]].assign(alarm=pred <= threshold)
    failure_cycle = frame.groupby("unit")["cycle"].max()
    first_alarm = frame[frame["alarm"]].groupby("unit")["cycle"].min()
    stop = (first_alarm + lead_time).reindex(failure_cycle.index)
    planned = stop < failure_cycle
    run = np.where(planned, stop, failure_cycle)
    cost = planned.sum() * cost_preventive + (~planned).sum() * cost_failure
    return 1000 * cost / run.sum(), int((~planned).sum()), int(planned.sum())


def age_policy_cost(lives: np.ndarray, age: float) -> float:
    planned = lives > age
    cost = planned.sum() * cost_preventive + (~planned).sum() * cost_failure
    return 1000 * cost / np.minimum(lives, age).sum()


thresholds = np.arange(0, 81, 2)
pred_val = predict(x_val)
val_curve = np.array([policy_cost(val_rows, pred_val, t)[0] for t in thresholds])
best_threshold = float(thresholds[val_curve.argmin()])
test_curve = [policy_cost(test_rows, pred_test, t) for t in thresholds]
cost_predictive, failures, planned_stops = policy_cost(test_rows, pred_test, best_threshold)

train_lives = life[train_units].to_numpy()
ages = np.arange(10, int(train_lives.max()) + 1)
best_age = ages[np.argmin([age_policy_cost(train_lives, a) for a in ages])]
test_lives = life[test_units].to_numpy()
cost_age = age_policy_cost(test_lives, best_age)
cost_run_to_failure = 1000 * cost_failure * len(test_lives) / test_lives.sum()
cost_perfect = 1000 * cost_preventive * len(test_lives) / (test_lives - 1).sum()

fig_policy, ax = plt.subplots(figsize=(8, 4))
ax.plot(thresholds, [c[0] for c in test_curve], marker=".", label="predictive (test)")
ax.axvline(best_threshold, color="tab:blue", linestyle="--", alpha=0.6)
for value, label, style in [
    (cost_run_to_failure, "run to failure", "tab:red"),
    (cost_age, f"replace at age {best_age}", "tab:orange"),
    (cost_perfect, "perfect foresight", "tab:green"),
]:
    ax.axhline(value, color=style, linestyle=":", label=label)
ax.set(
    xlabel="alarm when predicted RUL ≤ threshold (cycles)",
    ylabel="EUR per 1000 operating cycles",
    title="Maintenance cost by policy (test pumps)",
)
ax.legend()
show(fig_policy, "policy")
policies = pd.DataFrame(
    {
        "EUR per 1000 cycles": [
            cost_run_to_failure,
            cost_age,
            cost_predictive,
            cost_perfect,
        ]
    },
    index=[
        "run to failure",
        f"fixed age ({best_age} cycles)",
        f"predictive (alarm at RUL ≤ {best_threshold:.0f})",
        "perfect foresight",
    ],
).round(0)
policies


# %% [markdown]
# ## 5. Summary and tracking
#
# Parameters, metrics and figures are stored in MLflow; section 6 adds the model.


# %%
metrics = {
    "rmse": rmse_model,
    "rmse_baseline": rmse_baseline,
    "rmse_ratio": rmse_model / rmse_baseline,
    "alarm_threshold": best_threshold,
    "cost_per_1000_cycles": cost_predictive,
    "cost_per_1000_cycles_run_to_failure": cost_run_to_failure,
    "cost_per_1000_cycles_fixed_age": cost_age,
    "cost_per_1000_cycles_perfect": cost_perfect,
    "test_failures": failures,
    "test_planned_stops": planned_stops,
    "train_seconds": train_seconds,
    "n_units": len(units),
}
with mlflow_timer():
    mlflow.log_metrics(metrics)
    if history:
        log_history(history)
    mlflow.log_artifacts(str(figure_dir), "figures")
saving = 1 - cost_predictive / cost_run_to_failure
display(
    Markdown(
        f"**RUL error** {rmse_model:.1f} cycles ({1 - metrics['rmse_ratio']:.0%} below "
        f"the baseline). **Recommended policy**: plan a stop when the predicted RUL "
        f"reaches {best_threshold:.0f} cycles: {cost_predictive:.0f} EUR per 1000 "
        f"cycles, {saving:.0%} less than running to failure "
        f"({failures} failures and {planned_stops} planned stops on "
        f"{len(test_units)} test pumps)."
    )
)

# %% [markdown]
# ## 6. The model, ready to serve
#
# The model is logged as an **MLflow Model** that takes feature rows (the columns
# of `fleet.add_features`, computed from a pump's history as in section 2) and
# answers with the predicted remaining life in cycles, never below zero, whichever
# `model_kind` was trained. It carries a *signature* (the feature columns and their
# types: a request without them is refused) and an *input example* (three cycles of
# a test pump, which an endpoint uses as its first test request).
#
# It is registered in the MLflow Model Registry as `registered_model` (in the
# workbench under your name: `<you>~remaining-life-regressor`); every run adds a
# version. When the run meets the template's **quality gate** (`gates` in
# `template.yaml`: an RMSE at most 70 % of the baseline's), the alias **champion**
# moves to this version, and endpoints serving `models:/<name>@champion` pick it
# up. A run below the gate is registered without the alias, so the champion stays
# the last good one.


# %%
class RemainingLife(mlflow.pyfunc.PythonModel):
    """Feature rows in; predicted remaining useful life (cycles) out."""

    def __init__(self, estimate, columns, scaling=None):
        self.estimate, self.columns, self.scaling = estimate, columns, scaling

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        x = model_input[self.columns]
        if self.scaling is None:  # gradient boosting: its predict function
            rul = self.estimate(x)
        else:  # the network: standardised inputs, output in units of the mean life
            mean, std, scale = self.scaling
            values = torch.from_numpy(((x.to_numpy() - mean) / std).astype(np.float32))
            with torch.no_grad():
                rul = self.estimate(values).squeeze(1).numpy() * scale
        return pd.DataFrame({"rul_cycles": np.clip(rul, 0, None)})


if model_kind == "boosting":
    served = RemainingLife(model.predict, list(x_train.columns))
else:
    served = RemainingLife(model.cpu().eval(), list(x_train.columns), (mean, std, scale))
first_pump = x_test[(test_rows["unit"] == test_units[0]).to_numpy()]
input_example = first_pump.iloc[[0, len(first_pump) // 2, -1]]  # new, half-way, failing
gate = quality_gate(metrics)  # the gates in template.yaml
with mlflow_timer():
    model_info = mlflow.pyfunc.log_model(
        name="model",
        python_model=served,
        signature=mlflow.models.infer_signature(input_example, served.predict(None, input_example)),
        input_example=input_example,
        pip_requirements=pinned("scikit-learn", "torch", "numpy", "pandas", "cloudpickle"),
    )
    registered = None
    if registered_model:
        registered = register_champion(model_info, registered_model, gate.passed, gate=str(gate))
display(Markdown(registered.note() if registered else "Model logged, not registered."))

# %% jupyter={"source_hidden": true}
# Workbench plumbing: end the MLflow run, write the results file, say where the run is.
tracking.finish(params, metrics, registered)
