"""ServerApp: a few rounds of FedAvg over a linear model; writes the files werkhub reads
(rounds.jsonl, final.json + model.npz, or error.json) into $WERKHUB_FEDERATION_OUT/<run>."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()
FEATURES = 4


def _out(context: Context) -> Path:
    folder = Path(os.environ["WERKHUB_FEDERATION_OUT"]) / str(context.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fail(out: Path, message: str) -> None:
    (out / "error.json").write_text(json.dumps({"message": message}))
    raise RuntimeError(message)


def _exchange(grid: Grid, messages: list, timeout: float) -> list:
    """``grid.send_and_receive``, asking for replies every 0.1 s instead of Flower's 3 s."""
    waiting, replies = set(grid.push_messages(messages)), []
    end = time.monotonic() + timeout
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting.difference_update(m.metadata.reply_to_message_id for m in got)
        if waiting and time.monotonic() < end:
            time.sleep(0.1)
        else:
            break
    return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds, minimum = int(cfg["num-server-rounds"]), int(cfg["min-parties"])
    timeout, pause = float(cfg["round-timeout"]), float(cfg["round-pause"])
    out = _out(context)
    weights = {"w": np.zeros(FEATURES), "b": np.zeros(1)}
    waited = time.monotonic()
    nodes = list(grid.get_node_ids())
    while len(nodes) < minimum and time.monotonic() - waited < timeout:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    for rnd in range(1, rounds + 1):
        started = time.monotonic()
        nodes = list(grid.get_node_ids())
        if len(nodes) < minimum:
            _fail(
                out,
                f"only {len(nodes)} parties are connected in round {rnd}; "
                f"this federation needs at least {minimum}",
            )
        content = RecordDict(
            {
                "arrays": ArrayRecord([weights["w"], weights["b"]]),
                "config": ConfigRecord({"round": rnd}),
            }
        )
        messages = [grid.create_message(content, "train", n, str(rnd)) for n in nodes]
        replies = [m for m in _exchange(grid, messages, timeout) if not m.has_error()]
        if len(replies) < minimum:
            _fail(
                out,
                f"only {len(replies)} of {len(nodes)} parties replied in round {rnd}; "
                f"this federation needs at least {minimum}",
            )
        total = sum(int(r.content["metrics"]["examples"]) for r in replies)
        new = {k: np.zeros_like(v) for k, v in weights.items()}
        loss = 0.0
        for reply in replies:
            share = int(reply.content["metrics"]["examples"]) / total
            arrays = reply.content["arrays"].to_numpy_ndarrays()
            new["w"] += share * arrays[0]
            new["b"] += share * arrays[1]
            loss += share * float(reply.content["metrics"]["local_loss"])
        weights = new
        size = sum(a.nbytes for a in weights.values())
        row = {
            "round": rnd,
            "parties": len(replies),
            "loss": loss,
            "metrics": {"mse": loss},
            "bytes_in": size * len(replies),
            "bytes_out": size * len(nodes),
            "seconds": time.monotonic() - started,
        }
        with (out / "rounds.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        time.sleep(pause)
    np.savez(out / "model.npz", **weights)
    final = {"rounds": rounds, "metrics": {"mse": loss}, "classes": [], "model": "model.npz"}
    (out / "final.json").write_text(json.dumps(final))
