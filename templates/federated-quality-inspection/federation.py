# %% [markdown]
# # Federated surface inspection: train together without sharing images
#
# A machine builder, an automotive supplier and a software house each inspect
# machined steel parts with a camera. Each sees mostly **one kind of defect**: the
# machine builder mostly scratches, the supplier mostly dents (pits), the software
# house mostly stains (inclusions). Alone, each trains a classifier that knows its
# own defect well and the others badly. Pooling the images would fix that, but the
# images are the companies' own and must not leave their premises.
#
# **Federated learning** trains one model without moving the data: each round, the
# owner of the federation sends the current model to every party, each party trains
# it for a while on its own images, and only the updated *parameters* travel back,
# where the owner averages them into the next global model (FedAvg). With **secure
# aggregation** (Flower's SecAgg+) the owner even sees only the *sum* of the updates,
# never a single party's.
#
# This notebook is the owner's side of the template. It
#
# 1. makes the three parties' images (non-IID: different defect mixes) and the
#    owner's **mixed held-out test set**,
# 2. trains the two baselines locally: a model on the **pooled** images (what you
#    would get if sharing were allowed) and each party **alone**,
# 3. runs **the same Flower app** that werkhub deploys on a real federation in
#    Flower's **simulation engine**, and
# 4. checks the quality gate: the federated model reaches at least **95 % of the
#    pooled model's macro-F1** and beats the **best solo model by 0.05**.
#
# Section 6 shows how to run it for real across organisations with
# `werkhub_widgets.federation()`.

# %% tags=["parameters"]
n_per_party: int = 1200  # images per party
skew: float = 0.95  # share of a party's defects that are its main defect
rounds: int = 40  # federated rounds
local_epochs: int = 1  # passes over its own images a party makes per round
learning_rate: float = 0.05  # local learning rate in round 1
lr_decay: float = 0.92  # the learning rate shrinks by this factor each round
hidden: int = 64  # hidden units of the classifier
strategy: str = "fedavg"  # "fedavg", "fedprox" or "fedadam"
secure_aggregation: bool = False  # SecAgg+: the owner sees only the sum of the updates
n_test: int = 800  # the owner's mixed held-out test images
image_size: int = 32  # pixels per side
noise: float = 0.04  # camera noise (standard deviation, images are in [0, 1])
data_dir: str = ""  # your own data: data_dir/<party>/ per party (see section 1)
seed: int = 0
simulation_timeout: int = 900  # seconds the simulation may take
federation_name: str = ""  # a werkhub federation to show (section 6); "": none
registered_model: str = "federated-quality-inspection-classifier"  # "": not registered
mlflow_experiment: str = "federated-quality-inspection"
results_path: str = ""  # JSON summary of metrics and timings (for jobs and tests)

# %%
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from fedinspect import data, model, task
from IPython.display import Markdown, display
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
classes = list(data.CLASSES)
parties = list(data.PARTIES)
work = Path(tempfile.mkdtemp(prefix="federation-"))

# %% jupyter={"source_hidden": true}
# Workbench plumbing (werkhub_widgets.templatekit): MLflow tracking and the time it costs,
# figures shown once and logged at the end, the results file, and the parameters
# logged to the run (expand to read).
tracking = start_tracking("federated-quality-inspection", mlflow_experiment, results_path, started)
mlflow, mlflow_timer = tracking.mlflow, tracking.timer
show, figure_dir, log_history = tracking.show, tracking.figure_dir, tracking.log_history
params = parameters(globals())  # the parameters cell, with the values a job gave
with mlflow_timer():
    mlflow.log_params(params)

# %% [markdown]
# ## 1. Three parties, three defect mixes
#
# The images come from the quality-inspection template's physical surface model
# (`fedinspect/surfaces.py`, a copy of `quality-inspection/surfaces.py`: feed marks,
# roughness, oblique light; scratches are thin grooves, pits round dents with a
# dark and a bright flank, inclusions spots of different reflectance). Each party
# has half good parts; of its defects, a share `skew` is its main defect and the
# rest is split between the other two. The data is **non-IID**: the parties'
# images are drawn from different distributions, which is exactly what makes
# federated learning both useful and harder than training on pooled data.
#
# On a real federation each party keeps its images in its own data folder
# (`surfaces.npz`, written by `python -m fedinspect.data prepare --party <party>
# --out <folder>`), which werkhub shows to that party's trainer only, read-only.

# %%
party_data = {
    party: data.make_party(party, n_per_party, image_size, seed, noise, skew) for party in parties
}
test_images, test_labels = data.make_test_set(n_test, image_size, seed, noise)

# %% [markdown]
# ### ▶ Use your own data
#
# Put each party's images in `data_dir/<party>/`, either as `surfaces.npz` (arrays
# `images`, float grey values 0..1 of shape (n, `image_size`, `image_size`), and
# `labels`, class indices in the order none, scratch, pit, inclusion) or as an
# image folder with one sub-folder per class (`none/*.png`, `scratch/*.png`, ...).
# The party folders are named like the parties above; a folder `data_dir/test/`,
# if there is one, is the owner's held-out test set (otherwise the synthetic one).
# Image folders are converted to `surfaces.npz` for the Flower app, which runs with
# numpy only. Everything after this cell works unchanged.

# %%
if data_dir:
    party_data = {
        party: data.load_party(Path(data_dir) / party, image_size)
        for party in parties
        if (Path(data_dir) / party).is_dir()
    }
    parties = list(party_data)
    if (Path(data_dir) / "test").is_dir():
        test_images, test_labels = data.load_party(Path(data_dir) / "test", image_size)
data_root = work / "parties"
for party, (images, labels) in party_data.items():
    data.save_party(data_root / party, images, labels)
test_dir = ""
if data_dir and (Path(data_dir) / "test").is_dir():
    test_dir = str(data.save_party(work / "test", test_images, test_labels).parent)

mix = pd.DataFrame(
    {
        party: np.bincount(labels, minlength=len(classes))
        for party, (_, labels) in party_data.items()
    }
    | {"owner's test set": np.bincount(test_labels, minlength=len(classes))},
    index=classes,
)
fig_mix, ax = plt.subplots(figsize=(8, 3.6))
(mix / mix.sum()).T.plot.barh(stacked=True, ax=ax, colormap="viridis")
ax.set(xlabel="share of images", title="Class mix of each party's data and of the test set")
ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
show(fig_mix, "class-mix")
mix

# %% [markdown]
# ## 2. The model, and the two baselines
#
# Every party runs the same small classifier in plain numpy (the Flower app runs in
# an environment of its own with only `flwr` and `numpy`): 48 **image features**
# that describe the strongest local anomaly of an image (extremes of the high-pass
# residual and of blob detectors at three scales, edge strengths, the size,
# elongation and polarity of the strongest blob: see `fedinspect/features.py`),
# standardised with a mean and spread the owner fixes from its own unlabelled
# images, then a **multilayer perceptron** with one hidden layer of `hidden` units.
#
# Baselines, trained here with the same schedule as the federation (`rounds` ×
# `local_epochs` passes, the learning rate shrinking by `lr_decay` per round) and
# scored on the owner's test set:
#
# * **pooled**: all parties' images in one place: the upper bound that sharing
#   data would give;
# * **solo**: each party alone on its own images: what each gets without the
#   federation.

# %%
scaling = task.Scaling.from_images(
    data.make_reference_images(400, image_size, seed, noise)
)  # what the ServerApp does too
party_x = {party: task.standardised(images, scaling) for party, (images, _) in party_data.items()}
x_test = task.standardised(test_images, scaling)
train_config = model.TrainConfig(epochs=local_epochs, learning_rate=learning_rate)

t_baselines = time.perf_counter()
x_pooled = np.concatenate([party_x[p] for p in parties])
y_pooled = np.concatenate([party_data[p][1] for p in parties])
pooled = task.train_alone(x_pooled, y_pooled, hidden, rounds, train_config, lr_decay, seed)
pooled_scores = task.scores(pooled, x_test, test_labels)
solo_scores = {}
for party in tqdm(parties, desc="solo baselines", leave=False):
    solo = task.train_alone(
        party_x[party], party_data[party][1], hidden, rounds, train_config, lr_decay, seed
    )
    solo_scores[party] = task.scores(solo, x_test, test_labels)
baseline_seconds = time.perf_counter() - t_baselines
best_solo = max(solo_scores, key=lambda p: solo_scores[p]["macro_f1"])
pd.DataFrame(
    {"pooled": pooled_scores, **{f"solo: {p}": s for p, s in solo_scores.items()}}
).T.round(3)

# %% [markdown]
# ## 3. The federation, in Flower's simulation engine
#
# The Flower app of this template (`pyproject.toml` and `fedinspect/` in this
# folder) is what werkhub runs on a real federation: a **ServerApp** (the owner's
# aggregator; it evaluates the global model on its test set after each round and
# writes `rounds.jsonl`, `final.json` and `model.npz`) and a **ClientApp** (each
# party's trainer; it reads only its own data folder and writes its local scores to
# `local.jsonl`). Here the very same app runs in Flower's **simulation engine**
# (Ray), one virtual SuperNode per party, through `python -m fedinspect.simulate`
# in the Flower environment (`.venv-flower`; `WERKHUB_FLOWER_PYTHON` names another
# interpreter). Nothing leaves this machine and Ray's usage statistics are off.


# %%
def flower_python() -> Path:
    """The Python of the Flower environment: $WERKHUB_FLOWER_PYTHON, $WERKHUB_FLOWER_BIN/python,
    or .venv-flower next to this kernel's environment or above this folder."""
    if os.environ.get("WERKHUB_FLOWER_PYTHON"):
        return Path(os.environ["WERKHUB_FLOWER_PYTHON"])
    if os.environ.get("WERKHUB_FLOWER_BIN"):
        return Path(os.environ["WERKHUB_FLOWER_BIN"]) / "python"
    for folder in (Path(sys.prefix).parent, Path.cwd(), *Path.cwd().parents):
        candidate = folder / ".venv-flower" / "bin" / "python"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("no Flower environment: set WERKHUB_FLOWER_PYTHON")


run_config = {
    "num-server-rounds": rounds,
    "strategy": f'"{strategy}"',
    "secure-aggregation": str(secure_aggregation).lower(),
    "local-epochs": local_epochs,
    "learning-rate": learning_rate,
    "lr-decay": lr_decay,
    "hidden": hidden,
    "image-size": image_size,
    "noise": noise,
    "seed": seed,
    "n-test": n_test,
    "test-dir": f'"{test_dir}"',
}
command = [str(flower_python()), "-m", "fedinspect.simulate", "--data-root", str(data_root)]
command += ["--parties", ",".join(parties), "--out", str(work / "runs")]
command += ["--summary", str(work / "summary.json")]
for key, value in run_config.items():
    command += ["--config", f"{key}={value}"]
app_folder = Path.cwd()  # this template's folder: the Flower app
environment = {
    **os.environ,
    "PYTHONPATH": str(app_folder),
    "RAY_USAGE_STATS_ENABLED": "0",
}
t_federation = time.perf_counter()
simulation = subprocess.run(
    command,
    cwd=app_folder,
    env=environment,
    capture_output=True,
    text=True,
    timeout=simulation_timeout,
)
federation_seconds = time.perf_counter() - t_federation
summary = json.loads((work / "summary.json").read_text()) if simulation.returncode == 0 else {}
if simulation.returncode != 0 or not summary.get("run_dir"):
    raise RuntimeError(
        f"the simulation failed:\n{simulation.stdout[-3000:]}{simulation.stderr[-3000:]}"
    )
run_dir = Path(summary["run_dir"])
rounds_log = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
final = json.loads((run_dir / "final.json").read_text())
local_logs = {
    party: [
        json.loads(line)
        for line in (work / "runs" / "parties" / party / run_dir.name / "local.jsonl")
        .read_text()
        .splitlines()
    ]
    for party in parties
}
print(f"{len(rounds_log)} rounds in {federation_seconds:.1f} s (Ray's start included)")

# %% [markdown]
# The federated model is what the ServerApp saved (`model.npz`). We score it here
# on the same test set as the baselines, which also checks that it matches what the
# ServerApp reported in its last round.

# %%
with np.load(run_dir / "model.npz") as saved:
    federated = {name: saved[name] for name in model.NAMES}
    assert np.allclose(saved["feature_mean"], scaling.mean)
federated_scores = task.scores(federated, x_test, test_labels)
assert abs(federated_scores["macro_f1"] - final["metrics"]["macro_f1"]) < 1e-6

history = pd.DataFrame(
    [
        {"round": r["round"], "parties": r["parties"], "loss": r["loss"], **r["metrics"]}
        | {"kB_in": r["bytes_in"] / 1e3, "kB_out": r["bytes_out"] / 1e3, "seconds": r["seconds"]}
        for r in rounds_log
    ]
).set_index("round")
fig_rounds, (ax_f1, ax_bytes) = plt.subplots(1, 2, figsize=(11, 3.8))
ax_f1.plot(history.index, history["macro_f1"], marker=".", label="federated (global model)")
ax_f1.axhline(pooled_scores["macro_f1"], color="tab:green", linestyle="--", label="pooled")
ax_f1.axhline(
    solo_scores[best_solo]["macro_f1"],
    color="tab:red",
    linestyle=":",
    label=f"best solo ({best_solo})",
)
ax_f1.set(title="Macro-F1 on the owner's test set", xlabel="round", ylim=(0, 1))
ax_f1.legend(loc="lower right")
ax_bytes.bar(history.index, history["kB_in"] / history["parties"], label="in (per party)")
ax_bytes.set(title="Traffic per round and party", xlabel="round", ylabel="kB")
show(fig_rounds, "rounds")
history.tail(3).round(3)

# %% [markdown]
# Each party sees its own local scores (on its own images) round by round; these
# never leave the party. Solo models look great on their own data and poor on the
# mixed test set: that difference is what the federation is for.

# %%
local_table = pd.DataFrame(
    {
        party: {
            "local macro-F1, last round": log[-1]["metrics"]["local_macro_f1"],
            "solo model on the mixed test set": solo_scores[party]["macro_f1"],
            "federated model on the mixed test set": federated_scores["macro_f1"],
            "images": log[-1]["examples"],
        }
        for party, log in local_logs.items()
    }
)
local_table.round(3)

# %% [markdown]
# ## 4. The quality gate
#
# The federation is worth it when the federated model is **nearly as good as
# pooling** (macro-F1 at least 0.95 × pooled) and **clearly better than going
# alone** (at least 0.05 above the best solo model). Both are relative metrics
# recorded in this run (`federated_vs_pooled`, `federated_minus_best_solo`) and
# checked against `gates` in `template.yaml`.

# %%
bytes_per_round_per_party = float(
    np.mean([(r["bytes_in"] + r["bytes_out"]) / r["parties"] for r in rounds_log])
)
metrics = {
    "federated_macro_f1": federated_scores["macro_f1"],
    "federated_accuracy": federated_scores["accuracy"],
    "pooled_macro_f1": pooled_scores["macro_f1"],
    "best_solo_macro_f1": solo_scores[best_solo]["macro_f1"],
    "federated_vs_pooled": federated_scores["macro_f1"] / pooled_scores["macro_f1"],
    "federated_minus_best_solo": federated_scores["macro_f1"] - solo_scores[best_solo]["macro_f1"],
    "seconds_per_round": float(history["seconds"].mean()),
    "bytes_per_round_per_party": bytes_per_round_per_party,
    "federation_seconds": federation_seconds,
    "baseline_seconds": baseline_seconds,
    "n_parameters": model.n_weights(federated),
    "n_images": int(sum(len(labels) for _, labels in party_data.values())),
}
gate = quality_gate(metrics)  # the gates in template.yaml
display(
    Markdown(
        f"Federated macro-F1 **{metrics['federated_macro_f1']:.3f}**, pooled "
        f"**{metrics['pooled_macro_f1']:.3f}** (ratio {metrics['federated_vs_pooled']:.3f}), "
        f"best solo **{metrics['best_solo_macro_f1']:.3f}** ({best_solo}; the federation is "
        f"{metrics['federated_minus_best_solo']:+.3f} above it). Quality gate: "
        f"**{'met' if gate.passed else 'not met'}** ({gate})."
    )
)
with mlflow_timer():
    mlflow.log_metrics(metrics)
    log_history(history[["loss", "macro_f1", "accuracy"]].to_dict("records"))
    mlflow.log_artifacts(str(figure_dir), "figures")

# %% [markdown]
# ## 5. The model, ready to serve
#
# The federated model is registered in the MLflow Model Registry like the other
# inspection models: grey images in (`image_size` × `image_size`, values 0..1), the
# class, P(defect) and **reject** (P(defect) ≥ 0.5) out. When the run meets the
# quality gate the version gets the alias **champion**; on a real federation
# werkhub registers the final global model itself and shares it with every party.


# %%
class FederatedInspector(mlflow.pyfunc.PythonModel):
    """Grey images in; class, P(defect) and the accept/reject decision out."""

    def __init__(self, params, mean, scale, class_names, reject_at=0.5):
        self.params, self.mean, self.scale = params, mean, scale
        self.class_names, self.reject_at = class_names, reject_at

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        from fedinspect import features as image_features
        from fedinspect import model as mlp

        x = (image_features.image_features(np.asarray(model_input)) - self.mean) * self.scale
        proba = mlp.predict_proba(self.params, x)
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


inspector = FederatedInspector(federated, scaling.mean, scaling.scale, classes)
good_and_bad = [np.flatnonzero((test_labels != 0) == d)[:1] for d in (False, True)]
input_example = test_images[np.concatenate(good_and_bad)].astype(np.float32)
with mlflow_timer():
    model_info = mlflow.pyfunc.log_model(
        name="model",
        python_model=inspector,
        code_paths=["fedinspect"],
        signature=mlflow.models.infer_signature(
            input_example, inspector.predict(None, input_example)
        ),
        input_example=input_example,
        pip_requirements=pinned("numpy", "pandas", "cloudpickle"),
    )
    registered = None
    if registered_model:
        registered = register_champion(model_info, registered_model, gate.passed, gate=str(gate))
display(Markdown(registered.note() if registered else "Model logged, not registered."))

# %% [markdown]
# ## 6. For real: a federation across organisations
#
# In the workbench the owner's organisation creates a **federation** with this
# template as its app, invites the other organisations, and each organisation's
# admin accepts with the folder of their own data (`python -m fedinspect.data
# prepare --party <party> --out <folder>` makes the synthetic one). werkhub runs a
# Flower SuperLink for the federation (TLS, only registered SuperNodes), and each
# party's SuperNode in that party's sandbox, where its data folder is the only data
# it can read and the SuperLink the only address it can reach. Secure aggregation
# is on by default for three or more parties. The widget below lists your
# federations and their runs and starts a run (set `federation_name`); without it,
# or outside the workbench, nothing is contacted.
#
# Trade-offs worth knowing: more local epochs per round mean fewer rounds of
# communication but more *client drift* on non-IID data; SecAgg+ costs extra
# messages per round (keys, shares) and time, not accuracy; a party that drops out
# is tolerated down to the federation's minimum number of parties.

# %%
if federation_name and os.environ.get("JUPYTERHUB_API_TOKEN"):
    from werkhub_widgets import federation

    display(federation(federation_name))
else:
    display(Markdown("No federation selected (`federation_name`): nothing contacted."))

# %% jupyter={"source_hidden": true}
# Workbench plumbing: end the MLflow run, write the results file, say where the run is.
tracking.finish(params, metrics, registered)
