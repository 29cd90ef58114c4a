"""The ClientApp: one party's local training, on its own images only.

Where the party's images are: ``context.node_config["data-dir"]`` (werkhub's SuperNodes:
``/data``, the party's data folder bound read-only); in Flower's simulation engine, where
nodes only have a ``partition-id``, ``<run config sim-data-root>/<party>`` with the party
taken from ``sim-parties``. What leaves the party: the trained parameters and the number of
examples, nothing else (with secure aggregation, only their masked, quantised form).
Each round it trained is appended to ``$WERKHUB_PARTY_OUT/<run id>/local.jsonl``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fedinspect import data, features, model, task

_FEATURES: dict[tuple[str, bytes], tuple[np.ndarray, np.ndarray]] = {}


def party_of(context: Context) -> str:
    if os.environ.get("WERKHUB_PARTY"):
        return os.environ["WERKHUB_PARTY"]
    if "party" in context.node_config:
        return str(context.node_config["party"])
    parties = str(task.run_config(context).get("sim-parties", ",".join(data.PARTIES))).split(",")
    return parties[int(context.node_config.get("partition-id", 0)) % len(parties)].strip()


def data_dir_of(context: Context, party: str) -> Path:
    if "data-dir" in context.node_config:
        return Path(str(context.node_config["data-dir"]))
    root = str(task.run_config(context).get("sim-data-root", ""))
    if not root:
        raise ValueError("this node has no data-dir in its node config and no sim-data-root")
    return Path(root) / party


def out_dir_of(context: Context, party: str) -> Path:
    """``$WERKHUB_PARTY_OUT/<run id>``; without it ``<out-dir>/parties/<party>/<run id>``."""
    base = os.environ.get("WERKHUB_PARTY_OUT")
    if base:
        folder = Path(base) / str(context.run_id)
    else:
        root = str(task.run_config(context).get("out-dir", "")) or tempfile.gettempdir()
        folder = Path(root) / "parties" / party / str(context.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PartyClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context
        self.party = party_of(context)

    def _training_data(self, scaling: task.Scaling, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The party's standardised features and labels. The image features are computed
        once per run: kept in this process and in the run's scratch folder (Flower may start
        a new ClientApp process for every round)."""
        folder = data_dir_of(self.context, self.party)
        key = (f"{folder}:{size}", b"")
        if key not in _FEATURES:
            cache = out_dir_of(self.context, self.party) / f"features-{size}.npz"
            if cache.is_file():
                with np.load(cache) as saved:
                    _FEATURES[key] = (saved["features"], saved["labels"])
            else:
                images, labels = data.load_party(folder, size)
                _FEATURES[key] = (features.image_features(images), labels)
                np.savez(cache, features=_FEATURES[key][0], labels=labels)
        raw, labels = _FEATURES[key]
        return scaling.apply(raw), labels

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        hidden = int(task.run_config(self.context).get("hidden", 64))
        return model.to_list(task.new_model(hidden, 0))

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        started = time.perf_counter()
        round_number = int(config.get("server-round", 0))
        scaling = task.Scaling.from_config(config)
        x, y = self._training_data(scaling, int(config.get("image-size", 32)))
        seed = zlib.crc32(self.party.encode()) + 7919 * round_number
        trained, loss = model.train(
            model.from_list(parameters), x, y, task.train_config(config), seed
        )
        local = task.scores(trained, x, y)
        out = out_dir_of(self.context, self.party)
        line = {
            "round": round_number,
            "examples": len(y),
            "metrics": {
                "local_loss": loss,
                "local_macro_f1": local["macro_f1"],
                "local_accuracy": local["accuracy"],
                "seconds": time.perf_counter() - started,
            },
        }
        with (out / "local.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        if bool(task.run_config(self.context).get("record-messages", False)):
            # test-only: the true local update, to compare with what the aggregator saw
            np.savez(out / f"update-round-{round_number}.npz", examples=len(y), **trained)
        return model.to_list(trained), len(y), {}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        scaling = task.Scaling.from_config(config)
        x, y = self._training_data(scaling, int(config.get("image-size", 32)))
        result = task.scores(model.from_list(parameters), x, y)
        return result["loss"], len(y), {}


def client_fn(context: Context):
    return PartyClient(context).to_client()


def secagg_when_asked(msg: Message, context: Context, call_next):
    """Flower's ``secaggplus_mod`` for the rounds the ServerApp runs with SecAgg+ (its
    instructions carry the protocol's config record); plain training otherwise."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(client_fn=client_fn, mods=[secagg_when_asked])
