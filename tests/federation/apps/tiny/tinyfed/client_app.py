"""ClientApp: a few steps of gradient descent on the party's /data/points.csv; records its
rounds in $WERKHUB_PARTY_OUT/<run>/local.jsonl, and what its probes (paths to read,
host:port addresses to reach, HTTPS URLs to POST to, comma-separated) met, in probes.jsonl."""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _post(url: str) -> str:
    tls = ssl.create_default_context(cafile="/werkhub/tls/ca.pem")
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"content-type": "application/protobuf"}
    )
    try:
        with urllib.request.urlopen(request, context=tls, timeout=10) as answer:
            return f"status {answer.status}"
    except urllib.error.HTTPError as err:
        return f"status {err.code}"
    except OSError as err:
        return f"error: {type(err).__name__}: {err}"


def _probe(context: Context, out: Path) -> None:
    found: dict[str, str] = {"party": str(context.node_config.get("party", ""))}
    for path in filter(None, str(context.run_config.get("probe-path", "")).split(",")):
        try:
            with open(path, "rb") as handle:
                found[path] = f"read {len(handle.read())} bytes"
        except OSError as err:
            found[path] = f"error: {type(err).__name__}: {err}"
    address = str(context.run_config.get("probe-address", ""))
    for target in filter(None, address.split(",")):
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=3):
                found[target] = "connected"
        except OSError as err:
            found[target] = f"error: {type(err).__name__}: {err}"
    urls = str(context.run_config.get("probe-url", ""))
    for url in filter(None, urls.split(",")):
        found[url] = _post(url)
    with (out / "probes.jsonl").open("a") as handle:
        handle.write(json.dumps(found) + "\n")


@app.train()
def train(msg: Message, context: Context) -> Message:
    out = Path(os.environ["WERKHUB_PARTY_OUT"]) / str(context.run_id)
    out.mkdir(parents=True, exist_ok=True)
    _probe(context, out)
    data = np.loadtxt(Path(str(context.node_config["data-dir"])) / "points.csv", delimiter=",")
    x, y = data[:, :-1], data[:, -1]
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    for _ in range(20):
        err = x @ w + b - y
        w = w - 0.1 * (x.T @ err) / len(y)
        b = b - 0.1 * np.array([err.mean()])
    loss = float(np.mean((x @ w + b - y) ** 2))
    rnd = int(msg.content["config"]["round"])
    with (out / "local.jsonl").open("a") as handle:
        row = {"round": rnd, "examples": len(y), "metrics": {"local_loss": loss}}
        handle.write(json.dumps(row) + "\n")
    reply = RecordDict(
        {
            "arrays": ArrayRecord([w, b]),
            "metrics": MetricRecord({"examples": len(y), "local_loss": loss}),
        }
    )
    return Message(reply, reply_to=msg)
