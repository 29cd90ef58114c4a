"""MLflow for federation runs, spoken through werkhub's MLflow gateway as the user it is
for (a hub token minted for them, like jobs do): the owner's experiment gets the global
metrics per round, each party user's experiment that party's local metrics, and a run
that finished well registers its final global model in the owner's registry, shared
with every party's organisation group (the federation is the rule that allows sharing
across organisations). The model is an MLflow pyfunc model whose loader reads
``model.npz``: ``mlflow.pyfunc.load_model(uri).get_raw_model().arrays`` are the global
parameters by name."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from werkhub import http
from werkhub.errors import Upstream

V2 = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
LOADER = "werkhub_federated_model"
LOADER_CODE = '''"""A werkhub federation's global model (model.npz) as an MLflow pyfunc model."""

import json
import os

import numpy as np


class FederatedModel:
    """The global parameters by name (``arrays``) and the class names (``classes``)."""

    def __init__(self, path):
        with np.load(os.path.join(path, "model.npz")) as data:
            self.arrays = {name: data[name] for name in data.files}
        meta = os.path.join(path, "final.json")
        self.final = json.load(open(meta)) if os.path.exists(meta) else {}
        self.classes = list(self.final.get("classes") or [])

    def predict(self, model_input, params=None):
        """A chain of dense layers (``*weight``/``*bias`` pairs in file order, ReLU
        between them, the last one's arg-max as the class): the shape of small
        federated models; anything else says what it holds."""
        names = list(self.arrays)
        weights = [n for n in names if n.endswith("weight") or n.startswith("w")]
        biases = [n for n in names if n.endswith("bias") or n.startswith("b")]
        if not weights or len(weights) != len(biases):
            raise ValueError(
                "this model holds the federation's parameters "
                + ", ".join(names)
                + "; read them with get_raw_model().arrays"
            )
        x = np.asarray(model_input, dtype="float32").reshape(len(model_input), -1)
        for i, (w, b) in enumerate(zip(weights, biases)):
            matrix = self.arrays[w]
            x = x @ (matrix.T if matrix.shape[-1] == x.shape[1] else matrix) + self.arrays[b]
            if i < len(weights) - 1:
                x = np.maximum(x, 0)
        best = x.argmax(axis=1)
        return [self.classes[i] if i < len(self.classes) else int(i) for i in best]


def _load_pyfunc(path):
    return FederatedModel(path)
'''

Mint = Callable[[str], Awaitable[str]]


def mlmodel(run_id: str) -> str:
    """The ``MLmodel`` file of a registered federation model (a pyfunc loader module)."""
    return (
        "artifact_path: model\n"
        "flavors:\n"
        "  python_function:\n"
        f"    loader_module: {LOADER}\n"
        "    code: code\n"
        "    data: data\n"
        "    python_version: 3.11\n"
        f"model_uuid: {uuid.uuid4().hex}\n"
        f"run_id: {run_id}\n"
        f"utc_time_created: '{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}'\n"
    )


class UserMlflow:
    """MLflow's REST API through the gateway at ``base`` as the holder of ``token``."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.client = http.async_client(bearer=token, timeout=60)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _call(
        self, method: str, path: str, ok: tuple[str, ...] = (), **kwargs: Any
    ) -> dict[str, Any] | None:
        reply = await self.client.request(method, f"{self.base}{path}", **kwargs)
        if reply.status_code == 200:
            return reply.json() if reply.content else {}
        try:
            body = reply.json()
        except ValueError:
            body = {}
        code = str(body.get("error_code", ""))
        if code and code in ok:
            return None
        message = str(body.get("message") or body.get("detail") or reply.text)[:200]
        raise Upstream(f"MLflow answered {reply.status_code} {code}: {message}")

    async def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        found = await self._call(
            "GET",
            f"{V2}/experiments/get-by-name",
            ok=("RESOURCE_DOES_NOT_EXIST",),
            params={"experiment_name": name},
        )
        if found is not None:
            return str(found["experiment"]["experiment_id"])
        made = await self._call(
            "POST", f"{V2}/experiments/create", ok=("RESOURCE_ALREADY_EXISTS",), json={"name": name}
        )
        if made is None:
            return await self.experiment(name)
        return str(made["experiment_id"])

    async def start_run(
        self, experiment_id: str, name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> tuple[str, str]:
        """A new MLflow run: (its id, its artifact URI)."""
        made = await self._call(
            "POST",
            f"{V2}/runs/create",
            json={
                "experiment_id": experiment_id,
                "run_name": name,
                "start_time": int(time.time() * 1000),
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        assert made is not None
        info = made["run"]["info"]
        if params:
            await self._call(
                "POST",
                f"{V2}/runs/log-batch",
                json={
                    "run_id": info["run_id"],
                    "params": [{"key": k, "value": str(v)[:500]} for k, v in params.items()],
                },
            )
        return str(info["run_id"]), str(info["artifact_uri"])

    async def log(self, run_id: str, values: dict[str, float], step: int) -> None:
        if not values:
            return
        now = int(time.time() * 1000)
        items = [{"key": k, "value": v, "timestamp": now, "step": step} for k, v in values.items()]
        for start in range(0, len(items), 900):  # MLflow takes up to 1000 per batch
            await self._call(
                "POST",
                f"{V2}/runs/log-batch",
                json={"run_id": run_id, "metrics": items[start : start + 900]},
            )

    async def end(self, run_id: str, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        await self._call(
            "POST",
            f"{V2}/runs/update",
            json={"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)},
        )

    async def upload(self, artifact_uri: str, path: str, content: bytes) -> None:
        """Put ``content`` at ``path`` below a run's ``mlflow-artifacts:/`` URI."""
        prefix = "mlflow-artifacts:"
        if not artifact_uri.startswith(prefix):
            raise Upstream(f"MLflow keeps artifacts at {artifact_uri}, not behind its proxy")
        where = artifact_uri[len(prefix) :].lstrip("/")
        url = f"{self.base}{ARTIFACTS}/{quote(where)}/{quote(path)}"
        reply = await self.client.put(url, content=content)
        if reply.status_code != 200:
            raise Upstream(f"MLflow did not take artifact {path}: {reply.status_code}")

    async def register(self, name: str, source: str, run_id: str) -> str:
        """A new version of registered model ``name`` (made when missing): its number."""
        await self._call(
            "POST",
            f"{V2}/registered-models/create",
            ok=("RESOURCE_ALREADY_EXISTS",),
            json={"name": name},
        )
        made = await self._call(
            "POST",
            f"{V2}/model-versions/create",
            json={"name": name, "source": source, "run_id": run_id},
        )
        assert made is not None
        return str(made["model_version"]["version"])

    async def withdraw(self, name: str, version: str) -> None:
        """Delete version ``version`` of registered model ``name``, and the model too when
        no other version is left (one this registration made)."""
        await self._call(
            "DELETE",
            f"{V2}/model-versions/delete",
            ok=("RESOURCE_DOES_NOT_EXIST",),
            json={"name": name, "version": version},
        )
        left = await self._call(
            "GET",
            f"{V2}/model-versions/search",
            params={"filter": f"name='{name}'", "max_results": 1},
        )
        if not (left or {}).get("model_versions"):
            await self._call(
                "DELETE",
                f"{V2}/registered-models/delete",
                ok=("RESOURCE_DOES_NOT_EXIST",),
                json={"name": name},
            )


async def log_model(client: UserMlflow, run_id: str, artifact_uri: str, run_dir: Path) -> str:
    """Upload the final model of ``run_dir`` (model.npz, final.json) as a pyfunc model
    below ``model/`` of the MLflow run; the source URI for its registration."""
    final = json.loads((run_dir / "final.json").read_text())
    model_file = run_dir / str(final.get("model", "model.npz"))
    files = {
        "model/MLmodel": mlmodel(run_id).encode(),
        f"model/code/{LOADER}.py": LOADER_CODE.encode(),
        "model/data/model.npz": model_file.read_bytes(),
        "model/data/final.json": json.dumps(final).encode(),
        "model/requirements.txt": b"numpy\n",
    }
    for path, content in files.items():
        await client.upload(artifact_uri, path, content)
    return f"{artifact_uri.rstrip('/')}/model"


class Clients:
    """One :class:`UserMlflow` per user, each with a hub token minted for them once."""

    def __init__(self, base: str, mint: Mint) -> None:
        self.base = base
        self.mint = mint
        self._clients: dict[str, UserMlflow] = {}

    async def of(self, user: str) -> UserMlflow:
        if user not in self._clients:
            self._clients[user] = UserMlflow(self.base, await self.mint(user))
        return self._clients[user]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
