"""jobs() widget logic without a kernel, against a real werkhub with the jobs service."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.hub import Werkhub
from werkhub_widgets import WerkhubClient
from werkhub_widgets.jobs import JobsWidget

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
USER = "jobs-jack"


def notebook(source: str) -> dict:
    return {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"tags": ["parameters"]},
                "source": source,
                "outputs": [],
                "execution_count": None,
            },
            {
                "cell_type": "code",
                "metadata": {},
                "source": "print(rows * scale, label, flag, sizes)\n",
                "outputs": [],
                "execution_count": None,
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def token(werkhub: Werkhub) -> str:
    token = werkhub.create_user(USER)
    home = werkhub.state / "homes" / USER
    home.mkdir(parents=True, exist_ok=True)
    source = "rows = 10\nscale = 1.5\nlabel = 'line 3'\nflag = True\nsizes = [1, 2]\n"
    (home / "daily.ipynb").write_text(json.dumps(notebook(source)))
    return token


def make(werkhub: Werkhub, token: str, path: str = "daily.ipynb") -> JobsWidget:
    client = WerkhubClient(f"{werkhub.url}/services/werkhub/", token)
    return JobsWidget(path, client, home=Path(werkhub.state / "homes" / USER))


def test_parameter_form_and_type_checks(werkhub: Werkhub, token: str) -> None:
    w = make(werkhub, token)
    assert w.error is None, w.text
    assert {n: p["type"] for n, p in w.declared.items()} == {
        "rows": "int",
        "scale": "float",
        "label": "str",
        "flag": "bool",
        "sizes": "list",
    }
    assert [c.description for c in w.params_box.children] == [
        "rows (int)",
        "scale (float)",
        "label (str)",
        "flag (bool)",
        "sizes (list)",
    ]
    assert w.parameters() == {
        "rows": 10,
        "scale": 1.5,
        "label": "line 3",
        "flag": True,
        "sizes": [1, 2],
    }
    w.inputs["rows"].value = 25
    w.inputs["sizes"].value = "[3, 4, 5]"
    assert w.parameters()["rows"] == 25 and w.parameters()["sizes"] == [3, 4, 5]
    assert w.parameters({"scale": 2})["scale"] == 2.0  # an int is fine for a float
    # wrong types never reach the service
    with werkhub.client(token) as api:
        before = api.get(f"{API}/jobs").json()
    assert w.schedule({"rows": "ten"}) is None
    assert "parameters.rows: expected int" in w.text
    assert w.schedule({"flag": 1}) is None and "parameters.flag" in w.text
    assert w.schedule({"rows": True}) is None and "parameters.rows" in w.text
    assert w.schedule({"unknown": 1}) is None and "not a parameter" in w.text
    w.inputs["sizes"].value = "[1, 2"
    assert w.schedule() is None and "parameters.sizes" in w.text
    with werkhub.client(token) as api:
        assert api.get(f"{API}/jobs").json() == before
    # a notebook that is not there: the service's message, no traceback
    missing = make(werkhub, token, "nope.ipynb")
    assert missing.error and "notebook" in missing.text


def test_cron_presets_preview_and_schedule(werkhub: Werkhub, token: str) -> None:
    w = make(werkhub, token)
    w.preset.value = "0 6 * * 1-5"
    assert w.cron.value == "0 6 * * 1-5" and w.cron.disabled
    runs = w.preview()
    assert len(runs) == 5 and w.preview_html.value.count("<li>") == 5
    assert all(
        " 06:00 " in f" {li} " or "06:00" in li for li in w.preview_html.value.split("<li>")[1:]
    )
    w.preset.value = "custom"
    assert not w.cron.disabled
    w.cron.value = "61 * * * *"
    assert w.next_runs == [] and w.error and "schedule.cron" in w.text
    w.cron.value = "*/30 * * * *"
    assert len(w.next_runs) == 5 and w.error is None
    w.name.value = "widget-daily"
    w.preset.value = "0 7 * * 1"
    job = w.schedule({"rows": 3})
    assert job is not None, w.text
    assert job["schedule"]["cron"] == "0 7 * * 1" and job["parameters"]["rows"] == 3
    assert "saved" in w.text and "widget-daily" in w.history.value
    with werkhub.client(token) as api:
        stored = api.get(f"{API}/jobs/{job['id']}").json()
    assert stored["parameters"]["scale"] == 1.5 and len(stored["next_runs"]) == 5


def test_run_now_and_history_with_report(werkhub: Werkhub, token: str) -> None:
    w = make(werkhub, token)
    w.name.value = "widget-now"
    created = w.run_now()
    assert created is not None, w.text
    deadline = time.monotonic() + 180
    finished: list[dict] = []
    while time.monotonic() < deadline:
        w.refresh()
        job = next(j for j in w.jobs if j["name"] == "widget-now")
        finished = [
            r for r in w.runs[job["id"]] if r["status"] in ("succeeded", "failed", "timed_out")
        ]
        if finished:
            break
        time.sleep(1)
    assert finished, w.history.value
    assert finished[0]["status"] == "succeeded", finished[0]
    assert "succeeded" in w.history.value and ">report</a>" in w.history.value
    # a second "Run now" runs the existing job again
    run = w.run_now()
    assert run is not None and "queued" in w.text, w.text
    assert run["job_id"] == job["id"]
