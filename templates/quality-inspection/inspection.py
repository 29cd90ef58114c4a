# %% [markdown]
# # Surface defect inspection with a small CNN
#
# This notebook trains a convolutional neural network to sort camera images of
# machined surfaces into **good**, **scratch**, **pit** and **inclusion**, and then
# turns the network's scores into an accept/reject decision whose threshold is set
# by what mistakes cost you.
#
# What you get: a confusion matrix, the parts it misses, a cost curve with the
# recommended operating threshold, an MLflow run, and the model registered in the
# MLflow Model Registry, ready to serve as an endpoint. It runs in about half a
# minute on a CPU and uses a GPU when your booking has one.
#
# **To use your own images**, see *Use your own images* in section 1 or set the
# `data_dir` parameter. All parameters are in the next cell.

# %% tags=["parameters"]
n_train: int = 4000  # synthetic training images
n_val: int = 800  # validation images (used to choose the operating threshold)
n_test: int = 800  # held-out test images (used only for the final scores)
image_size: int = 32  # pixels per side
noise: float = 0.04  # camera noise (standard deviation, images are in [0, 1])
channels: int = 12  # width of the first convolution layer
epochs: int = 10
batch_size: int = 64
learning_rate: float = 0.01  # peak of the one-cycle schedule
cost_false_accept: float = 50.0  # EUR: a defective part reaches the customer
cost_false_reject: float = 2.0  # EUR: a good part is scrapped or re-inspected
defect_rate: float = 0.05  # share of defective parts in production
data_dir: str = ""  # folder with your own images: data_dir/<class>/*.png
seed: int = 0
device_name: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
cpu_threads: int = 2
registered_model: str = "quality-inspection-classifier"  # registry name ("<you>~" added); "": none
mlflow_experiment: str = "quality-inspection"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import surfaces
import torch
from IPython.display import Markdown, display
from sklearn.metrics import classification_report, confusion_matrix, f1_score
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
tracking = start_tracking("quality-inspection", mlflow_experiment, results_path, started)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir, log_history = tracking.show, tracking.figure_dir, tracking.log_history
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## 1. The data: how the surfaces are made
#
# The images come from `surfaces.py` in this folder, a small physical model of a
# camera looking at a turned or milled steel surface:
#
# * **Surface height** = periodic *feed marks* left by the tool (grooves every 3-7
#   pixels, direction within ±20°) + random roughness.
# * **Image** = Lambertian shading of that height under an oblique light
#   (45° elevation, random direction) × the local reflectance × a smooth
#   illumination gradient, with random exposure and Gaussian sensor noise
#   (`noise`).
# * **Defects** change the image in physically different ways:
#   * *scratch*: a long narrow groove in the height map → a thin line of shading;
#   * *pit*: a small round depression → under oblique light one flank turns dark
#     and the opposite one bright;
#   * *inclusion*: foreign material flush with the surface but with a different
#     reflectance (dark slag or bright oxide) → an irregular spot *without*
#     directional shading.
#
# Training, validation and test images are drawn independently (different seeds).

# %%
x_train, y_train = surfaces.make_images(n_train, image_size, seed, noise)
x_val, y_val = surfaces.make_images(n_val, image_size, seed + 1, noise)
x_test, y_test = surfaces.make_images(n_test, image_size, seed + 2, noise)
classes = list(surfaces.CLASSES)

# %% [markdown]
# ### ▶ Use your own images
#
# Put your images in one sub-folder per class, named like the classes above:
# `my_parts/none/*.png`, `my_parts/scratch/*.png`, `my_parts/pit/*.png`,
# `my_parts/inclusion/*.png` (PNG, JPEG, BMP or TIFF; they are converted to
# grayscale and resized to `image_size`). Then set `data_dir = "my_parts"` in the
# parameters cell, or pass it as a job parameter. The images are shuffled and
# split 70 / 15 / 15 into training, validation and test sets. Everything after this
# cell works unchanged.

# %%
if data_dir:
    images, labels = surfaces.load_image_folder(data_dir, image_size)
    order = rng.permutation(len(labels))
    cut_val, cut_test = int(0.7 * len(order)), int(0.85 * len(order))
    parts = np.split(order, [cut_val, cut_test])
    (x_train, x_val, x_test) = (images[p] for p in parts)
    (y_train, y_val, y_test) = (labels[p] for p in parts)

counts = pd.DataFrame(
    {
        name: np.bincount(y, minlength=len(classes))
        for name, y in [("train", y_train), ("validation", y_val), ("test", y_test)]
    },
    index=classes,
)
counts

# %%
examples_per_class = 6
fig_examples, axes = plt.subplots(
    len(classes), examples_per_class, figsize=(1.6 * examples_per_class, 7)
)
for row, name in enumerate(classes):
    picks = np.flatnonzero(y_train == row)[:examples_per_class]
    for col in range(examples_per_class):
        ax = axes[row, col]
        ax.axis("off")
        if col < len(picks):
            ax.imshow(x_train[picks[col]], cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title(name, loc="left", fontsize=11)
fig_examples.suptitle("Example images per class")
show(fig_examples, "examples")


# %% [markdown]
# ## 2. The model
#
# A small convolutional network: three blocks of 3×3 convolution, batch
# normalisation, ReLU and pooling, then a linear layer giving one score per class.
# It has a few thousand weights, which is plenty for 32×32 images and trains in
# seconds. Two habits that matter with real parts too:
#
# * **Standardise** pixel values with statistics of the training set only.
# * **Augment** with horizontal and vertical flips: a defect is a defect whichever
#   way up the part lies, so the network should not learn the orientation.
#
# Training uses the AdamW optimiser with a one-cycle learning-rate schedule; the
# validation set tells us after each epoch how well it generalises.


# %%
def make_model(width: int, n_classes: int) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]

    return nn.Sequential(
        *block(1, width),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 4 * width),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, n_classes),
    )


pixel_mean, pixel_std = float(x_train.mean()), float(x_train.std())


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(x).unsqueeze(1) - pixel_mean) / pixel_std).to(device)


def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        chunks = [model(to_tensor(x[i : i + 512])) for i in range(0, len(x), 512)]
    return torch.softmax(torch.cat(chunks), dim=1).cpu().numpy()


model = make_model(channels, len(classes)).to(device)
n_weights = sum(p.numel() for p in model.parameters())
print(f"{n_weights:,} weights, training on {device}")

# %%
xb_all, yb_all = to_tensor(x_train), torch.from_numpy(y_train).to(device)
steps_per_epoch = (len(y_train) + batch_size - 1) // batch_size
optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
schedule = torch.optim.lr_scheduler.OneCycleLR(
    optimiser, max_lr=learning_rate, total_steps=epochs * steps_per_epoch
)
history = []
t_train = time.perf_counter()
for _ in tqdm(range(epochs), desc="training", leave=False):
    model.train()
    order = torch.randperm(len(y_train), device=device)
    total_loss = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        xb = xb_all[idx]
        flip = torch.rand(len(idx), 2, 1, 1, 1, device=device) < 0.5
        xb = torch.where(flip[:, 0], xb.flip(3), xb)
        xb = torch.where(flip[:, 1], xb.flip(2), xb)
        loss = nn.functional.cross_entropy(model(xb), yb_all[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        total_loss += loss.item() * len(idx)
    val_pred = predict_proba(model, x_val).argmax(1)
    history.append(
        {
            "train_loss": total_loss / len(y_train),
            "val_accuracy": float((val_pred == y_val).mean()),
            "val_macro_f1": f1_score(y_val, val_pred, average="macro"),
        }
    )
train_seconds = time.perf_counter() - t_train
pd.DataFrame(history).rename_axis("epoch").tail(3)

# %%
fig_training, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.5))
frame = pd.DataFrame(history)
ax_loss.plot(frame.index + 1, frame["train_loss"], marker="o")
ax_loss.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy")
ax_score.plot(frame.index + 1, frame["val_accuracy"], marker="o", label="accuracy")
ax_score.plot(frame.index + 1, frame["val_macro_f1"], marker="s", label="macro F1")
ax_score.set(title="Validation scores", xlabel="epoch", ylim=(0, 1.02))
ax_score.legend()
show(fig_training, "training")

# %% [markdown]
# ## 3. How good is it?
#
# Scores on the **held-out test set**, which played no part in training or in
# choosing anything. The *confusion matrix* counts, for each true class (rows), what
# the network predicted (columns): the diagonal is right, everything else is a
# mistake. *Macro F1* averages the F1 score (the harmonic mean of precision and
# recall) over the four classes, so a rare class counts as much as a common one.

# %%
test_proba = predict_proba(model, x_test)
test_pred = test_proba.argmax(1)
cm = confusion_matrix(y_test, test_pred, labels=range(len(classes)))
test_macro_f1 = f1_score(y_test, test_pred, average="macro", zero_division=0)
test_accuracy = float((test_pred == y_test).mean())

fig_confusion, ax = plt.subplots(figsize=(5.5, 4.5))
ax.imshow(cm, cmap="Blues")
ax.grid(False)
for (i, j), count in np.ndenumerate(cm):
    colour = "white" if count > cm.max() / 2 else "black"
    ax.text(j, i, count, ha="center", va="center", color=colour)
ax.set(
    xticks=range(len(classes)),
    yticks=range(len(classes)),
    xticklabels=classes,
    yticklabels=classes,
    xlabel="predicted",
    ylabel="true",
    title=f"Test set: accuracy {test_accuracy:.1%}, macro F1 {test_macro_f1:.3f}",
)
show(fig_confusion, "confusion")
report = classification_report(
    y_test,
    test_pred,
    labels=range(len(classes)),
    target_names=classes,
    output_dict=True,
    zero_division=0,
)
pd.DataFrame(report).T.round(3)

# %% [markdown]
# ## 4. Choosing the operating threshold
#
# On the line the question is simpler than four classes: **accept or reject?** The
# network's probability that a part is defective is `p = 1 - P(none)`; we reject
# when `p` exceeds a threshold. Where to put it depends on what mistakes cost:
#
# * a **false accept** (defective part shipped) costs `cost_false_accept`
#   (complaint, recall, reputation),
# * a **false reject** (good part scrapped or re-inspected) costs
#   `cost_false_reject`.
#
# Our image sets are balanced, but production is not: only `defect_rate` of the
# parts are defective. The expected cost per part at threshold *t* is therefore
#
# `defect_rate × P(accept | defective) × cost_false_accept
#  + (1 − defect_rate) × P(reject | good) × cost_false_reject`.
#
# We pick the threshold with the lowest expected cost on the **validation** set,
# and report what it does on the **test** set.

# %%
none_index = classes.index("none")


def cost_per_part(p_defect, is_defect, threshold):
    reject = p_defect >= threshold
    false_accept = float((~reject & is_defect).sum() / max(is_defect.sum(), 1))
    false_reject = float((reject & ~is_defect).sum() / max((~is_defect).sum(), 1))
    cost = (
        defect_rate * false_accept * cost_false_accept
        + (1 - defect_rate) * false_reject * cost_false_reject
    )
    return cost, false_accept, false_reject


val_p_defect = 1 - predict_proba(model, x_val)[:, none_index]
thresholds = np.linspace(0.01, 0.99, 99)
val_costs = np.array([cost_per_part(val_p_defect, y_val != none_index, t)[0] for t in thresholds])
threshold = float(thresholds[val_costs.argmin()])

test_p_defect = 1 - test_proba[:, none_index]
test_is_defect = y_test != none_index
cost, false_accept_rate, false_reject_rate = cost_per_part(test_p_defect, test_is_defect, threshold)
naive_cost = cost_per_part(test_p_defect, test_is_defect, 0.5)[0]

fig_cost, ax = plt.subplots(figsize=(7, 3.8))
ax.plot(thresholds, 1000 * val_costs, label="validation set")
ax.axvline(threshold, color="tab:red", linestyle="--", label=f"chosen {threshold:.2f}")
ax.set(
    xlabel="reject when P(defect) ≥ threshold",
    ylabel="expected cost per 1000 parts (EUR)",
    title="Cost of inspection mistakes vs. threshold",
)
ax.legend()
show(fig_cost, "cost")
display(
    Markdown(
        f"At threshold **{threshold:.2f}** the test set shows **{false_accept_rate:.1%}** "
        f"of defective parts accepted and **{false_reject_rate:.1%}** of good parts "
        f"rejected: **{1000 * cost:.0f} EUR per 1000 parts**, against "
        f"{1000 * naive_cost:.0f} EUR with the default threshold 0.5."
    )
)

# %% [markdown]
# ## 5. What does it miss?
#
# The most useful picture for an inspection engineer: the test images the system
# gets wrong at the chosen threshold. *Accepted* defects first (the expensive
# mistake), then good parts rejected, then defects given the wrong defect class.

# %%
reject = test_p_defect >= threshold
false_accepts = np.flatnonzero(test_is_defect & ~reject)
false_rejects = np.flatnonzero(~test_is_defect & reject)
wrong_class = np.flatnonzero(test_is_defect & reject & (test_pred != y_test))
misses = [("accepted", i) for i in false_accepts[:6]]
misses += [("rejected", i) for i in false_rejects[:3]]
misses += [("wrong class", i) for i in wrong_class[: 12 - len(misses)]]

fig_misses, axes = plt.subplots(2, 6, figsize=(11, 4.4))
for ax in axes.flat:
    ax.axis("off")
for ax, (kind, i) in zip(axes.flat, misses, strict=False):
    ax.imshow(x_test[i], cmap="gray", vmin=0, vmax=1)
    ax.set_title(
        f"{kind}\ntrue {classes[y_test[i]]}\npred {classes[test_pred[i]]}",
        fontsize=8,
    )
fig_misses.suptitle(
    f"Mistakes on the test set: {len(false_accepts)} accepted defects, "
    f"{len(false_rejects)} rejected good parts, {len(wrong_class)} wrong classes"
)
show(fig_misses, "misses")


# %% [markdown]
# ## 6. Summary and tracking
#
# The run, its parameters, these metrics and every figure above are stored in
# MLflow, so you can compare runs; section 7 adds the trained model.


# %%
metrics = {
    "test_macro_f1": test_macro_f1,
    "test_accuracy": test_accuracy,
    "val_macro_f1": history[-1]["val_macro_f1"],
    "threshold": threshold,
    "cost_per_1000_parts": 1000 * cost,
    "cost_per_1000_parts_at_0_5": 1000 * naive_cost,
    "false_accept_rate": false_accept_rate,
    "false_reject_rate": false_reject_rate,
    "train_seconds": train_seconds,
    "n_weights": n_weights,
    "n_images": len(y_train) + len(y_val) + len(y_test),
}
with mlflow_timer():
    mlflow.log_metrics(metrics)
    log_history(history)
    mlflow.log_artifacts(str(figure_dir), "figures")
summary = pd.DataFrame(
    {
        "value": [
            f"{test_macro_f1:.3f}",
            f"{test_accuracy:.1%}",
            f"{threshold:.2f}",
            f"{false_accept_rate:.1%}",
            f"{false_reject_rate:.1%}",
            f"{1000 * cost:.0f} EUR",
        ]
    },
    index=[
        "macro F1 (test)",
        "accuracy (test)",
        "operating threshold",
        "defective parts accepted",
        "good parts rejected",
        "expected cost per 1000 parts",
    ],
)
summary

# %% [markdown]
# ## 7. The model, ready to serve
#
# What an inspection station calls is not the bare network but the whole decision:
# images in (`image_size` × `image_size` grey values in 0..1, as in section 1),
# the predicted class, P(defect) and **accept or reject** at the chosen threshold
# out. `SurfaceInspector` below wraps exactly that, and it is logged as an **MLflow
# Model** with a *signature* (the input shape and the output columns: a request of
# another shape is refused) and an *input example* (a good and a defective test
# image, which an endpoint uses as its first test request).
#
# The model is registered in the MLflow Model Registry as `registered_model` (in
# the workbench under your name: `<you>~quality-inspection-classifier`); every run
# adds a version. When the run meets the template's **quality gate** (`gates` in
# `template.yaml`: macro F1 on the test set of at least 0.90), the alias
# **champion** moves to this version, and endpoints serving
# `models:/<name>@champion` pick it up. A run below the gate is registered
# without the alias, so the champion stays the last good one.


# %%
class SurfaceInspector(mlflow.pyfunc.PythonModel):
    """Grey images in; class, P(defect) and the accept/reject decision out."""

    def __init__(self, network, class_names, pixel_scaling, reject_at):
        self.network, self.class_names = network.eval(), class_names
        self.pixel_scaling, self.reject_at = pixel_scaling, reject_at

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        mean, std = self.pixel_scaling
        x = (torch.as_tensor(model_input, dtype=torch.float32).unsqueeze(1) - mean) / std
        with torch.no_grad():
            proba = torch.softmax(self.network(x), dim=1).numpy()
        p_defect = 1 - proba[:, self.class_names.index("none")]
        answer = pd.DataFrame(
            {
                "label": np.array(self.class_names)[proba.argmax(1)],
                "p_defect": p_defect,
                "reject": p_defect >= self.reject_at,
            }
        )
        for k, name in enumerate(self.class_names):
            answer[f"p_{name}"] = proba[:, k]
        return answer


inspector = SurfaceInspector(model.cpu(), classes, (pixel_mean, pixel_std), threshold)
good_and_bad = [np.flatnonzero(test_is_defect == d)[:1] for d in (False, True)]
input_example = x_test[np.concatenate(good_and_bad)]
gate = quality_gate(metrics)  # the gates in template.yaml
with mlflow_timer():
    model_info = mlflow.pyfunc.log_model(
        name="model",
        python_model=inspector,
        signature=mlflow.models.infer_signature(
            input_example, inspector.predict(None, input_example)
        ),
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
