"""experiments() widget without a kernel, against a real werkhub with the MLflow gateway."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.hub import Werkhub
from werkhub_widgets.experiments import ExperimentsWidget, line_chart
from werkhub_widgets.tracking_client import TrackingClient

pytestmark = pytest.mark.hub


def tracking(werkhub: Werkhub, token: str) -> TrackingClient:
    return TrackingClient(f"{werkhub.url}/services/mlflow", token)


def log_run(client: TrackingClient, experiment_id: str, name: str, losses: list[float]) -> str:
    now = int(time.time() * 1000)
    run = client.call(
        "POST",
        "runs/create",
        json={"experiment_id": experiment_id, "run_name": name, "start_time": now},
    )["run"]["info"]["run_id"]
    for step, value in enumerate(losses):
        client.call(
            "POST",
            "runs/log-metric",
            json={"run_id": run, "key": "loss", "value": value, "timestamp": now, "step": step},
        )
    client.call("POST", "runs/log-parameter", json={"run_id": run, "key": "lr", "value": "0.01"})
    client.call("POST", "runs/update", json={"run_id": run, "status": "FINISHED"})
    return run


@pytest.fixture(scope="module")
def runs(werkhub: Werkhub) -> dict[str, Any]:
    tokens = {name: werkhub.create_user(name) for name in ("exp-erin", "exp-fred")}
    erin = tracking(werkhub, tokens["exp-erin"])
    exp = erin.call("POST", "experiments/create", json={"name": "erin-surfaces"})
    ids = [
        log_run(erin, exp["experiment_id"], "small-cnn", [1.0, 0.6, 0.4]),
        log_run(erin, exp["experiment_id"], "wide-cnn", [0.9, 0.5, 0.2, 0.1]),
    ]
    fred = tracking(werkhub, tokens["exp-fred"])
    other = fred.call("POST", "experiments/create", json={"name": "fred-secret"})
    log_run(fred, other["experiment_id"], "fred-run", [5.0])
    return {"tokens": tokens, "ids": ids, "experiment": exp["experiment_id"]}


def test_runs_table_and_plot(werkhub: Werkhub, runs: dict[str, Any]) -> None:
    w = ExperimentsWidget(tracking(werkhub, runs["tokens"]["exp-erin"]), ui_url="/services/mlflow/")
    assert w.error is None, w.text
    assert "erin-surfaces" in w.table.value and "small-cnn" in w.table.value
    assert "loss=" in w.table.value and "lr=0.01" in w.table.value
    assert "fred" not in w.table.value  # another user's experiment stays invisible
    assert f"/services/mlflow/#/experiments/{runs['experiment']}/runs/{runs['ids'][0]}" in (
        w.table.value
    )
    assert {value for _label, value in w.run_picker.options} >= set(runs["ids"])
    w.select(runs["ids"], "loss")
    assert list(w.metric.options) == ["loss"]
    series = w.plot()
    assert series == {
        "small-cnn": [(0.0, 1.0), (1.0, 0.6), (2.0, 0.4)],
        "wide-cnn": [(0.0, 0.9), (1.0, 0.5), (2.0, 0.2), (3.0, 0.1)],
    }
    svg = w.plot_area.value
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and svg.count("<circle") == 7


def test_errors_are_messages(werkhub: Werkhub, runs: dict[str, Any]) -> None:
    w = ExperimentsWidget(tracking(werkhub, runs["tokens"]["exp-erin"]))
    w.select([])
    assert w.plot() is None and "Pick one or more runs" in w.text
    bad = ExperimentsWidget(TrackingClient(f"{werkhub.url}/services/mlflow", "not-a-token"))
    assert bad.error and bad.all_runs == []
    assert "No values" in line_chart({"a": []}, "loss")


def test_not_set_up_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    w = ExperimentsWidget()
    assert w.tracking is None and "MLflow is not set up" in w.text
    w.refresh()
    assert "MLflow is not set up" in w.text
