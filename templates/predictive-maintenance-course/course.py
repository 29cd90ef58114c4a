# %% [markdown]
# # Course: predicting when a pump will fail
#
# Unplanned failures are expensive: the repair itself, the damage a failing pump
# does to seals and pipes, and above all the lost production. Replacing parts on a
# fixed schedule wastes parts that still had life in them. **Predictive
# maintenance** watches sensor data and stops a machine just before it fails. In
# this course you compute the target a model must predict, set up a fair test,
# measure a baseline, train a model and price a maintenance policy.
#
# **How it works**: read each explanation, fill in the exercise cell where it says
# `...` and run it. `check(...)` tells you whether you are right. `hint("key")`
# gives a hint and `solution("key")` shows an answer, but try first! The notebook
# runs to the end even if an exercise is not solved yet.

# %% tags=["parameters"]
n_units: int = 80  # pumps in the simulated fleet
cost_failure: float = 20000.0  # EUR: unplanned failure
cost_preventive: float = 3000.0  # EUR: planned replacement
lead_time: int = 5  # cycles between an alarm and the planned stop
seed: int = 0
mlflow_experiment: str = "predictive-maintenance-course"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
# The fleet simulator lives in the engineer template next to this course.
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd().parent / "predictive-maintenance"))

# %%
import time

import fleet
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from checks import check, course, hint, reference, solution  # noqa: F401
from sklearn.ensemble import HistGradientBoostingRegressor

from werkhub_widgets.templatekit import parameters, set_up, start_tracking

# %matplotlib inline
started = time.perf_counter()
rng = set_up(seed)

# %% jupyter={"source_hidden": true}
# Workbench plumbing (werkhub_widgets.templatekit): MLflow tracking and the time it costs,
# figures shown once and logged at the end, the results file, and the parameters
# logged to the run (expand to read).
tracking = start_tracking("predictive-maintenance-course", mlflow_experiment, results_path, started)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir = tracking.show, tracking.figure_dir
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## Step 1: what the sensors see
#
# `fleet.py` simulates a fleet of centrifugal pumps. Each one wears out a little
# every operating cycle, faster under high load, until it fails. We cannot see the
# wear itself, only its symptoms: **vibration** rises, the **bearing temperature**
# creeps up, the **discharge pressure** drops. Pumps also switch between three
# operating regimes (low, nominal, high duty), which shift all sensors.

# %%
histories = fleet.simulate_fleet(n_units, seed).drop(columns=["wear", "rul"])
pump = histories[histories["unit"] == 0]
fig_pump, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, sensor in zip(axes, fleet.SENSORS, strict=True):
    ax.scatter(pump["cycle"], pump[sensor], c=pump["regime"], cmap="viridis", s=6)
    ax.set(title=sensor, xlabel="cycle")
fig_pump.suptitle("Pump 0 until it failed (colour: operating regime)")
show(fig_pump, "pump_history")
histories.head()

# %% [markdown]
# ## Step 2: what should a model predict?
#
# The **remaining useful life** (RUL): how many cycles a pump has left. Every pump
# in this data set ran until it failed, in its last recorded cycle, so the RUL of
# a row is the pump's last cycle minus the row's cycle (0 in the failure cycle).
#
# **Exercise 1.** Compute `rul`, one value per row of `histories`.

# %%
rul = ...  # your code here

check("rul", rul, histories=histories)
histories["rul"] = reference("rul", histories=histories)

# %% [markdown]
# ## Step 3: a fair test
#
# To know how well a model will do on pumps it has never seen, we hold some pumps
# back for testing. We split **by pump**, not by row.
#
# **Exercise 2.** Why? Answer with a letter.
#
# * a) It is faster to train on whole pumps.
# * b) Rows of the same pump are nearly identical from one cycle to the next: if
#   some went into training and others into the test, the model would be tested on
#   what it has almost seen, and look better than it is.
# * c) Splitting by row would leave some data unused.

# %%
answer = ...  # "a", "b" or "c"

check("split", answer)

# %%
units = rng.permutation(histories["unit"].unique())
test_units, train_units = units[: len(units) // 4], units[len(units) // 4 :]
train = histories[histories["unit"].isin(train_units)]
test = histories[histories["unit"].isin(test_units)]
print(f"{len(train_units)} pumps for training, {len(test_units)} for testing")

# %% [markdown]
# ## Step 4: the baseline to beat
#
# Without any sensor, the best guess is: a pump lives as long as the average
# training pump, so its RUL is the mean life minus its current age (and never
# below zero). We score predictions by the **root-mean-square error** (RMSE), the
# typical size of a prediction error in cycles.
#
# **Exercise 3.** Compute the RMSE of this baseline on the test rows.

# %%
mean_life = train.groupby("unit")["cycle"].max().mean()
cycle, true_rul = test["cycle"].to_numpy(), test["rul"].to_numpy()

baseline_rmse = ...  # your code here

check("baseline", baseline_rmse, mean_life=mean_life, cycle=cycle, true_rul=true_rul)

# %% [markdown]
# ## Step 5: a model that reads the sensors
#
# The model gets, for every cycle, the sensors corrected for the operating regime,
# their rolling mean and trend, and the age. Gradient-boosted trees learn how
# these map to the RUL. Is it better than the baseline?

# %%
baseline_stats = fleet.regime_baseline(train)
model = HistGradientBoostingRegressor(max_iter=200, random_state=seed)
model.fit(fleet.add_features(train, baseline_stats), train["rul"])
predicted = np.clip(model.predict(fleet.add_features(test, baseline_stats)), 0, None)
model_rmse = float(np.sqrt(np.mean((predicted - true_rul) ** 2)))
reference_baseline = reference("baseline", mean_life=mean_life, cycle=cycle, true_rul=true_rul)
print(f"model RMSE {model_rmse:.1f} cycles, baseline {reference_baseline:.1f} cycles")

fig_pred, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
for ax, unit in zip(axes, test_units, strict=False):
    rows = (test["unit"] == unit).to_numpy()
    ax.plot(cycle[rows], true_rul[rows], color="black", label="true")
    ax.plot(cycle[rows], predicted[rows], label="model")
    ax.set(title=f"pump {unit}", xlabel="cycle")
axes[0].set_ylabel("RUL (cycles)")
axes[0].legend()
show(fig_pred, "predictions")


# %% [markdown]
# ## Step 6: from predictions to money
#
# A simple policy: when the predicted RUL drops to a threshold, raise an alarm and
# replace the pump in a planned stop `lead_time` cycles later, unless it fails
# before. Here is what a threshold of 20 cycles does on the test pumps:


# %%
def simulate_policy(threshold):
    frame = test[["unit", "cycle"]].assign(alarm=predicted <= threshold)
    failure = frame.groupby("unit")["cycle"].max()
    stop = (frame[frame["alarm"]].groupby("unit")["cycle"].min() + lead_time).reindex(failure.index)
    planned = stop < failure
    return int((~planned).sum()), int(planned.sum()), float(np.where(planned, stop, failure).sum())


failures, planned_stops, cycles_run = simulate_policy(20)
print(f"{failures} failures, {planned_stops} planned stops, {cycles_run:.0f} cycles run")

# %% [markdown]
# **Exercise 4.** What does this policy cost per 1000 operating cycles?

# %%
cost_per_1000_cycles = ...  # your code here

check(
    "policy_cost",
    cost_per_1000_cycles,
    failures=failures,
    planned_stops=planned_stops,
    cycles_run=cycles_run,
    cost_failure=cost_failure,
    cost_preventive=cost_preventive,
)

# %%
thresholds = np.arange(0, 61, 4)
costs = [
    reference(
        "policy_cost",
        failures=f,
        planned_stops=p,
        cycles_run=c,
        cost_failure=cost_failure,
        cost_preventive=cost_preventive,
    )
    for f, p, c in map(simulate_policy, thresholds)
]
run_to_failure = 1000 * cost_failure * len(test_units) / test.groupby("unit")["cycle"].max().sum()
fig_policy, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(thresholds, costs, marker="o", label="predictive policy")
ax.axhline(run_to_failure, color="tab:red", linestyle=":", label="run to failure")
ax.set(xlabel="alarm threshold (cycles)", ylabel="EUR per 1000 cycles", ylim=(0, None))
ax.legend()
show(fig_policy, "policy_cost")

# %% [markdown]
# Too low a threshold and pumps fail before the planned stop; too high and you
# replace pumps with much life left. The engineer template `predictive-maintenance`
# chooses the threshold on separate validation pumps and compares with
# fixed-interval replacement.
#
# ## Your results

# %%
progress = course.summary()
metrics = {
    "exercises_passed": progress["passed"],
    "exercises_total": len(course.exercises),
    "rmse": model_rmse,
    "rmse_baseline": reference_baseline,
    "best_cost_per_1000_cycles": float(min(costs)),
    "cost_per_1000_cycles_run_to_failure": run_to_failure,
}
with mlflow_timer():
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(figure_dir), "figures")
pd.DataFrame({"status": course.status}).rename_axis("exercise")

# %% jupyter={"source_hidden": true}
# Workbench plumbing: end the MLflow run, write the results file, say where the run is.
tracking.finish(params, metrics)
