# %% [markdown]
# # Course: teaching a camera to find surface defects
#
# Visual inspection is one of the first places where machine learning pays off in
# a factory: a camera looks at every part, a model decides *good* or *defective*.
# In this course you look at images of machined steel surfaces, try a hand-made
# rule, train a small neural network, learn to read its mistakes, and decide where
# to set the accept/reject threshold when mistakes have a price.
#
# **How it works**: read each explanation, fill in the exercise cell where it says
# `...` and run it. `check(...)` tells you whether you are right. `hint("key")`
# gives a hint and `solution("key")` shows an answer, but try first! The notebook
# runs to the end even if an exercise is not solved yet.

# %% tags=["parameters"]
n_train: int = 1600  # training images
n_test: int = 400  # test images
epochs: int = 8
noise: float = 0.04  # camera noise
cost_false_accept: float = 50.0  # EUR: a defective part reaches the customer
cost_false_reject: float = 2.0  # EUR: a good part is scrapped
defect_rate: float = 0.05  # share of defective parts in production
seed: int = 0
device_name: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
cpu_threads: int = 2
mlflow_experiment: str = "quality-inspection-course"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
# The image generator lives in the engineer template next to this course.
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd().parent / "quality-inspection"))

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import surfaces
import torch
from checks import check, course, hint, reference, solution  # noqa: F401
from sklearn.metrics import confusion_matrix
from torch import nn
from tqdm.auto import tqdm

from werkhub_widgets.templatekit import parameters, set_up, start_tracking, torch_device

# %matplotlib inline
started = time.perf_counter()
rng = set_up(seed)
device = torch_device(device_name, cpu_threads, seed)

# %% jupyter={"source_hidden": true}
# Workbench plumbing (werkhub_widgets.templatekit): MLflow tracking and the time it costs,
# figures shown once and logged at the end, the results file, and the parameters
# logged to the run (expand to read).
tracking = start_tracking("quality-inspection-course", mlflow_experiment, results_path, started)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir = tracking.show, tracking.figure_dir
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## Step 1: look at the data
#
# Always look before you model. These images are made by `surfaces.py`: a turned
# steel surface with **feed marks** (the grooves a cutting tool leaves), lit from a
# random side, photographed with some noise. Four classes: **none** (a good
# part), **scratch** (a thin groove), **pit** (a small dent: dark on one side,
# bright on the other) and **inclusion** (a foreign particle: a spot that is darker
# or brighter than steel). Can you tell them apart?

# %%
x_train, y_train = surfaces.make_images(n_train, 32, seed, noise)
x_test, y_test = surfaces.make_images(n_test, 32, seed + 1, noise)
classes = list(surfaces.CLASSES)

fig_examples, axes = plt.subplots(len(classes), 5, figsize=(8, 6.6))
for row, name in enumerate(classes):
    for col, i in enumerate(np.flatnonzero(y_train == row)[:5]):
        axes[row, col].imshow(x_train[i], cmap="gray", vmin=0, vmax=1)
    for ax in axes[row]:
        ax.axis("off")
    axes[row, 0].set_title(name, loc="left")
show(fig_examples, "examples")

# %% [markdown]
# ## Step 2: prepare the pixels
#
# Neural networks learn best when their inputs are centred around 0 with a spread
# of about 1. **Standardising** means subtracting the mean and dividing by the
# standard deviation. Use one mean and one standard deviation for the whole
# training set (not one per image: the overall brightness of an image can matter).
#
# **Exercise 1.** Standardise `images`.

# %%
images = x_train

standardised = ...  # your code here

check("standardise", standardised, images=images)

# %% [markdown]
# ## Step 3: a hand-made rule
#
# Before machine learning, inspection systems used hand-made rules. A natural one:
# defects are often *dark spots*, so measure how much darker than usual the darkest
# pixel of each image is.
#
# **Exercise 2.** For every image compute its median pixel value minus its minimum
# pixel value (one number per image).

# %%
darkness = ...  # your code here

check("dark_spot", darkness, images=images)

# %% [markdown]
# The histograms show how well this rule separates good parts from each defect
# type, using the reference answer so this step works for everyone.

# %%
feature = reference("dark_spot", images=x_train)
fig_feature, ax = plt.subplots(figsize=(7, 3.5))
for index, name in enumerate(classes):
    ax.hist(feature[y_train == index], bins=30, alpha=0.5, label=name)
ax.set(xlabel="median minus darkest pixel", ylabel="images", title="A hand-made rule")
ax.legend()
show(fig_feature, "hand_made_rule")

# %% [markdown]
# Pits stand out, but scratches and inclusions overlap with good parts: a single
# number cannot capture *shape*. That is what a convolutional network learns.
#
# ## Step 4: train a small neural network
#
# A convolutional neural network slides small learned filters over the image
# (edges, spots, lines), combines them layer by layer, and outputs one score per
# class. Training shows it the labelled images a few times (*epochs*) and nudges
# the filters to reduce its mistakes. Run the cell and watch the accuracy.

# %%
mean, std = float(x_train.mean()), float(x_train.std())


def to_tensor(x):
    return ((torch.from_numpy(x).unsqueeze(1) - mean) / std).to(device)


model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1),
    nn.BatchNorm2d(8),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.BatchNorm2d(32),
    nn.ReLU(),
    nn.AdaptiveMaxPool2d(1),
    nn.Flatten(),
    nn.Linear(32, len(classes)),
).to(device)
optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
xt, yt = to_tensor(x_train), torch.from_numpy(y_train).to(device)
for epoch in tqdm(range(epochs), desc="training", leave=False):
    model.train()
    order = torch.randperm(len(yt), device=device)
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        proba = torch.softmax(model(to_tensor(x_test)), 1).cpu().numpy()
    print(f"epoch {epoch + 1}: test accuracy {(proba.argmax(1) == y_test).mean():.1%}")

# %% [markdown]
# ## Step 5: read the mistakes
#
# The **confusion matrix** counts, for every true class (row), what the network
# said (column). The diagonal is right. **Recall** of a class is the share of its
# parts that were found: the diagonal count divided by the row total.
#
# **Exercise 3.** Compute the recall of the class *pit* from `cm`.

# %%
predicted = proba.argmax(1)
cm = confusion_matrix(y_test, predicted, labels=range(len(classes)))
fig_confusion, ax = plt.subplots(figsize=(5, 4))
ax.imshow(cm, cmap="Blues")
ax.grid(False)
for (i, j), count in np.ndenumerate(cm):
    ax.text(j, i, count, ha="center", va="center")
ax.set(
    xticks=range(4),
    yticks=range(4),
    xticklabels=classes,
    yticklabels=classes,
    xlabel="predicted",
    ylabel="true",
    title="Confusion matrix (test images)",
)
show(fig_confusion, "confusion_matrix")

# %%
pit_recall = ...  # your code here

check("recall", pit_recall, cm=cm, classes=classes)

# %% [markdown]
# ## Step 6: what do mistakes cost?
#
# On the line the decision is *accept* or *reject*. A **false accept** (a defective
# part shipped) might cost 50 EUR in complaints and recalls, a **false reject** (a
# good part scrapped) 2 EUR. And only `defect_rate` (5 %) of real parts are
# defective. Here are the two error rates when we reject every part the network
# calls defective:

# %%
p_defect = 1 - proba[:, classes.index("none")]
is_defect = y_test != classes.index("none")


def error_rates(threshold):
    reject = p_defect >= threshold
    return (~reject & is_defect).sum() / is_defect.sum(), (reject & ~is_defect).sum() / (
        ~is_defect
    ).sum()


false_accept_rate, false_reject_rate = error_rates(0.5)
print(f"false accept rate {false_accept_rate:.1%}, false reject rate {false_reject_rate:.1%}")

# %% [markdown]
# **Exercise 4.** Compute the expected cost per produced part for these two rates.

# %%
cost_per_part = ...  # your code here

check(
    "expected_cost",
    cost_per_part,
    defect_rate=defect_rate,
    false_accept_rate=false_accept_rate,
    false_reject_rate=false_reject_rate,
    cost_false_accept=cost_false_accept,
    cost_false_reject=cost_false_reject,
)

# %% [markdown]
# Moving the threshold trades one mistake for the other. The curve uses the
# reference answer of Exercise 4 to find the cheapest threshold. (In a real project,
# choose it on a separate validation set, not on the test images.)

# %%
thresholds = np.linspace(0.02, 0.98, 49)
costs = []
for t in thresholds:
    fa, fr = error_rates(t)
    costs.append(
        1000
        * reference(
            "expected_cost",
            defect_rate=defect_rate,
            false_accept_rate=fa,
            false_reject_rate=fr,
            cost_false_accept=cost_false_accept,
            cost_false_reject=cost_false_reject,
        )
    )
best_threshold = float(thresholds[int(np.argmin(costs))])
fig_cost, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(thresholds, costs)
ax.axvline(best_threshold, color="tab:red", linestyle="--", label=f"cheapest: {best_threshold:.2f}")
ax.set(
    xlabel="reject when P(defect) ≥ threshold",
    ylabel="EUR per 1000 parts",
    title="Cost of inspection mistakes",
)
ax.legend()
show(fig_cost, "cost_vs_threshold")

# %% [markdown]
# ## Your results
#
# The engineer template `quality-inspection` goes further: a larger network,
# data augmentation, a validation set for the threshold, and the images it misses.

# %%
progress = course.summary()
metrics = {
    "exercises_passed": progress["passed"],
    "exercises_total": len(course.exercises),
    "test_accuracy": float((predicted == y_test).mean()),
    "best_threshold": best_threshold,
    "cost_per_1000_parts": float(min(costs)),
}
with mlflow_timer():
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(figure_dir), "figures")
pd.DataFrame({"status": course.status}).rename_axis("exercise")

# %% jupyter={"source_hidden": true}
# Workbench plumbing: end the MLflow run, write the results file, say where the run is.
tracking.finish(params, metrics)
