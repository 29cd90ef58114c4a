# %% [markdown]
# # Course: training together without sharing data
#
# Three companies inspect machined parts with cameras: a machine builder, an
# automotive supplier and a software house. Each sees mostly one kind of defect.
# Together they could train a much better defect classifier, but none of them may
# hand its images to the others. **Federated learning** trains one model anyway:
# the model travels, the data stays.
#
# In this course you measure how different the companies' data is, see what each
# company gets alone and what pooling would give, run federated averaging by hand,
# and work out what it costs: rounds and traffic, secure aggregation, parties that
# drop out.
#
# **How it works**: read each explanation, fill in the exercise cell where it says
# `...` and run it. `check(...)` tells you whether you are right. `hint("key")`
# gives a hint and `solution("key")` shows an answer, but try first! The notebook
# runs to the end even if an exercise is not solved yet.

# %% tags=["parameters"]
n_per_party: int = 600  # images per company
n_test: int = 400  # the owner's mixed test images
rounds: int = 20  # federated rounds
skew: float = 0.95  # share of a company's defects that are its main defect
noise: float = 0.04  # camera noise
seed: int = 0
mlflow_experiment: str = "federated-quality-inspection-course"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
# The data, the features and the classifier live in the engineer template next to
# this course (its Flower app, fedinspect/).
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd().parent / "federated-quality-inspection"))

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from checks import check, course, hint, reference, solution  # noqa: F401
from fedinspect import data, model, task
from tqdm.auto import tqdm

from werkhub_widgets.templatekit import parameters, set_up, start_tracking

# %matplotlib inline
started = time.perf_counter()
rng = set_up(seed)

# %% jupyter={"source_hidden": true}
# Workbench plumbing (werkhub_widgets.templatekit): MLflow tracking and the time it costs,
# figures shown once and logged at the end, the results file, and the parameters
# logged to the run (expand to read).
tracking = start_tracking(
    "federated-quality-inspection-course", mlflow_experiment, results_path, started
)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir = tracking.show, tracking.figure_dir
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## Step 1: three companies, three kinds of data
#
# The images come from the quality-inspection generator: **none** (a good part),
# **scratch**, **pit** (a dent) and **inclusion** (a stain of foreign material).
# Each company has half good parts; of its defects, a share `skew` is its own
# typical defect. Statisticians call such data **non-IID**: the companies' images
# do not come from the same distribution. That is why each company alone learns
# its own defect and little else, and why averaging their models is harder than
# training on pooled data.

# %%
parties = list(data.PARTIES)
party_data = {p: data.make_party(p, n_per_party, 32, seed, noise, skew) for p in parties}
test_images, test_labels = data.make_test_set(n_test, 32, seed, noise)
classes = list(data.CLASSES)
counts = pd.DataFrame(
    {p: np.bincount(labels, minlength=len(classes)) for p, (_, labels) in party_data.items()},
    index=classes,
)
counts["pooled"] = counts.sum(axis=1)
fig_mix, ax = plt.subplots(figsize=(7, 3.2))
(counts[parties] / counts[parties].sum()).T.plot.barh(stacked=True, ax=ax, colormap="viridis")
ax.set(xlabel="share of images", title="Class mix per company")
ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
show(fig_mix, "class-mix")
counts

# %% [markdown]
# **Exercise 1.** How far is the machine builder's class mix from the pooled mix?
# Use the *total variation distance*: turn both columns into shares and take half
# the sum of the absolute differences (0: the same mix, 1: nothing in common).

# %%
party_counts = counts["machine-builder"].to_numpy()
pooled_counts = counts["pooled"].to_numpy()
distance = ...  # your code here

check("non_iid", distance, party_counts=party_counts, pooled_counts=pooled_counts)

# %% [markdown]
# ## Step 2: alone, or everything pooled?
#
# The classifier is small: 48 features that describe the strongest spot in an
# image, a hidden layer, four outputs. We train it once per company on its own
# images (**solo**) and once on all images together (**pooled**, what sharing the
# data would give), and score all of them on the owner's *mixed* test set.

# %%
scaling = task.Scaling.from_images(data.make_reference_images(300, 32, seed, noise))
party_x = {p: task.standardised(images, scaling) for p, (images, _) in party_data.items()}
x_test = task.standardised(test_images, scaling)
hidden, lr, decay = 32, 0.05, 0.9
config = model.TrainConfig(epochs=1, learning_rate=lr)
scores = {}
for p in tqdm(parties, desc="solo", leave=False):
    solo = task.train_alone(party_x[p], party_data[p][1], hidden, rounds, config, decay, seed)
    scores[f"solo: {p}"] = task.scores(solo, x_test, test_labels)["macro_f1"]
x_pooled = np.concatenate([party_x[p] for p in parties])
y_pooled = np.concatenate([party_data[p][1] for p in parties])
pooled = task.train_alone(x_pooled, y_pooled, hidden, rounds, config, decay, seed)
scores["pooled"] = task.scores(pooled, x_test, test_labels)["macro_f1"]
pd.Series(scores, name="macro-F1 on the mixed test set").round(3)

# %% [markdown]
# ## Step 3: federated averaging
#
# A federated round: the owner sends the current global weights to every company;
# each trains them for one pass over its own images; the updated weights come
# back, and the owner combines them into the next global model. **FedAvg**
# combines them as a mean weighted by the number of images each company trained
# on, so that a company with more data counts more.
#
# **Exercise 2.** Given a list of `updates` (one weight array per company) and
# their `examples`, compute the new global weights.

# %%
updates = [rng.normal(0, 1, 6) for _ in parties]  # small stand-ins to practise on
examples = [len(party_data[p][1]) for p in parties]
global_weights = ...  # your code here

check("fedavg", global_weights, updates=updates, examples=examples)

# %% [markdown]
# The loop below is federated learning, minus the network: it uses the reference
# answer of Exercise 2 on every weight array. On a real federation the same steps
# run in Flower (the engineer template's app), each company's part on its own
# machine.


# %%
def federate(n_rounds: int, local_epochs: int) -> list[float]:
    weights = task.new_model(hidden, seed)
    f1 = []
    for r in range(1, n_rounds + 1):
        step = model.TrainConfig(
            epochs=local_epochs, learning_rate=task.round_learning_rate(lr, decay, r)
        )
        trained = [model.train(weights, party_x[p], party_data[p][1], step, r)[0] for p in parties]
        sizes = [len(party_data[p][1]) for p in parties]
        weights = {
            name: reference("fedavg", updates=[t[name] for t in trained], examples=sizes)
            for name in model.NAMES
        }
        f1.append(task.scores(weights, x_test, test_labels)["macro_f1"])
    return f1


federated_f1 = federate(rounds, 1)
best_solo = max(v for k, v in scores.items() if k.startswith("solo"))
fig_rounds, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(range(1, rounds + 1), federated_f1, marker=".", label="federated")
ax.axhline(scores["pooled"], color="tab:green", linestyle="--", label="pooled")
ax.axhline(best_solo, color="tab:red", linestyle=":", label="best solo")
ax.set(xlabel="round", ylabel="macro-F1", title="Federated vs pooled vs alone", ylim=(0, 1))
ax.legend(loc="lower right")
show(fig_rounds, "federated-rounds")

# %% [markdown]
# ## Step 4: rounds versus communication
#
# Every round costs traffic, so it is tempting to train longer locally and talk
# less. With non-IID data that backfires: each company's model drifts towards its
# own defect (*client drift*), and averaging drifted models loses accuracy. Below,
# the same number of passes over the data, split into many short rounds or a few
# long ones.
#
# **Exercise 3.** How many bytes travel in one round, both directions together,
# for `n_parties` companies and a model of `n_parameters` 32-bit values?

# %%
n_parties = len(parties)
n_parameters = model.n_weights(task.new_model(hidden, seed))
bytes_per_value = 4  # float32
bytes_per_round = ...  # your code here

check(
    "traffic",
    bytes_per_round,
    n_parties=n_parties,
    n_parameters=n_parameters,
    bytes_per_value=bytes_per_value,
)

# %%
few_rounds = max(rounds // 5, 1)
long_local = federate(few_rounds, rounds // few_rounds)
traffic = reference(
    "traffic", n_parties=n_parties, n_parameters=n_parameters, bytes_per_value=bytes_per_value
)
pd.DataFrame(
    {
        "rounds": [rounds, few_rounds],
        "passes per round": [1, rounds // few_rounds],
        "traffic (kB)": [rounds * traffic / 1e3, few_rounds * traffic / 1e3],
        "macro-F1": [federated_f1[-1], long_local[-1]],
    },
    index=["many short rounds", "few long rounds"],
).round(3)

# %% [markdown]
# ## Step 5: secure aggregation
#
# Model updates can leak something about the data they were trained on. With
# **secure aggregation** the owner never sees a single company's update, only the
# sum. The idea behind SecAgg+ (the protocol Flower implements): every pair of
# companies agrees on a random mask; one adds it to its update, the other
# subtracts it. Each masked update looks like noise, but in the sum all masks
# cancel. (SecAgg+ adds secret sharing, so the masks of a company that drops out
# can still be removed, and works on integers: the weights are quantised first.)
#
# **Exercise 4.** Three masked vectors came in. What can the owner compute?

# %%
pair_masks = {pair: rng.normal(0, 100, 5) for pair in [(0, 1), (0, 2), (1, 2)]}
true_updates = [rng.normal(0, 1, 5) for _ in parties]
masked = [
    true_updates[i]
    + sum(m for (a, b), m in pair_masks.items() if a == i)
    - sum(m for (a, b), m in pair_masks.items() if b == i)
    for i in range(len(parties))
]
aggregate = ...  # your code here

check("secagg_sum", aggregate, masked=masked)

# %%
recovered = reference("secagg_sum", masked=masked)
print("a masked update:  ", np.round(masked[0], 1))
print("its true update:  ", np.round(true_updates[0], 2))
print("sum of the masked:", np.round(recovered, 2))
print("sum of the true:  ", np.round(np.sum(true_updates, axis=0), 2))

# %% [markdown]
# The price: SecAgg+ needs four message exchanges per round instead of one (public
# keys, encrypted key shares, masked updates, unmasking), so rounds take longer and
# carry more bytes; the model is the same up to the quantisation.
#
# ## Step 6: when a company drops out
#
# A company's machine may crash mid-round. Plain FedAvg simply averages the
# updates that arrived, as long as the federation's minimum number of parties
# replied. With secure aggregation the masks a dropped company shared are rebuilt
# from *shares* of its secret held by the others (Shamir's secret sharing): any
# `threshold` shares rebuild it, fewer reveal nothing.
#
# **Exercise 5.** With `n_parties` companies and a reconstruction threshold of
# `threshold`, how many companies may drop out in a round and the sum still be
# recovered?

# %%
n_parties, threshold = 5, 3
may_drop = ...  # your code here

check("dropouts", may_drop, n_parties=n_parties, threshold=threshold)

# %% [markdown]
# ## Your results
#
# The engineer template `federated-quality-inspection` runs the same model as a
# real Flower app (in Flower's simulation engine, and across organisations in the
# workbench), with SecAgg+ and a quality gate: federated at least 0.95 of pooled
# and 0.05 above the best company alone.

# %%
progress = course.summary()
metrics = {
    "exercises_passed": progress["passed"],
    "exercises_total": len(course.exercises),
    "federated_macro_f1": float(federated_f1[-1]),
    "pooled_macro_f1": float(scores["pooled"]),
    "best_solo_macro_f1": float(best_solo),
}
with mlflow_timer():
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(figure_dir), "figures")
pd.DataFrame({"status": course.status}).rename_axis("exercise")

# %% jupyter={"source_hidden": true}
# Workbench plumbing: end the MLflow run, write the results file, say where the run is.
tracking.finish(params, metrics)
