"""Issue 12, item 4: one user flooding "run now" must not starve everyone's jobs.

Against the session's real werkhub (default queue settings: 2 runs at once, 1 per owner,
20 waiting per owner) with real papermill runs: the flood is refused with 429 past the
cap and nothing is stored, and another user's run queued after the flood starts within
one run slot, counted in run starts, not in seconds.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.hub import Werkhub
from tests.support.wait import wait_for

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
#: more than the old scheduler looked at (the oldest ~140 runs) and far past the cap
FLOOD = 160


def notebook(source: str, parameters: str) -> dict[str, Any]:
    def cell(text: str, tags: list[str]) -> dict[str, Any]:
        return {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": tags},
            "outputs": [],
            "source": text,
        }

    return {
        "cells": [cell(parameters, ["parameters"]), cell(source, [])],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def user_with_notebook(hub: Werkhub, prefix: str, seconds: float) -> tuple[str, str]:
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    token = hub.create_user(name)
    path = hub.state / "homes" / name / "work.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    source = "import time\ntime.sleep(seconds)\nprint('done')"
    path.write_text(json.dumps(notebook(source, f"seconds = {seconds}")))
    return name, token


def cron_job(api: httpx.Client, name: str) -> dict[str, Any]:
    reply = api.post(
        f"{API}/jobs",
        json={
            "name": name,
            "notebook": "work.ipynb",
            "schedule": {"kind": "cron", "cron": "0 3 1 1 *"},
            "retries": {"max": 0},
        },
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def wait_started(api: httpx.Client, run_id: int, timeout: float = 240) -> dict[str, Any]:
    def started() -> dict[str, Any] | None:
        run = api.get(f"{API}/runs/{run_id}").json()
        return run if run["started"] else None

    return wait_for(started, timeout=timeout, interval=0.3, what=f"run {run_id} to start")


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def test_a_run_now_flood_is_capped_and_delays_another_user_by_one_slot_at_most(
    werkhub: Werkhub,
) -> None:
    flooder, flood_token = user_with_notebook(werkhub, "flood", seconds=30)
    other, other_token = user_with_notebook(werkhub, "late", seconds=0)
    with werkhub.client(flood_token) as ann, werkhub.client(other_token) as ben:
        flood_job, late_job = cron_job(ann, "flood"), cron_job(ben, "late")
        accepted: list[httpx.Response] = []
        refused: list[httpx.Response] = []
        try:
            for _ in range(FLOOD):
                reply = ann.post(f"{API}/jobs/{flood_job['id']}/run")
                assert reply.status_code in (202, 429), reply.text
                (accepted if reply.status_code == 202 else refused).append(reply)
            assert refused, f"all {FLOOD} run-now requests of one user were queued"
            # the cap counts waiting runs: the first, running, is not one of them
            assert 20 <= len(accepted) <= 21, len(accepted)
            problem = refused[0].json()
            assert "runs waiting" in problem["detail"]
            assert "max_queued_per_user" in problem["detail"]
            stored = ann.get(f"{API}/jobs/{flood_job['id']}/runs", params={"limit": 1000})
            assert len(stored.json()) == len(accepted)  # a refused request stores nothing
            # a "now" job queues a run at once: refused too, and the job is not stored
            now_job = ann.post(
                f"{API}/jobs",
                json={"name": "more", "notebook": "work.ipynb", "schedule": {"kind": "now"}},
            )
            assert now_job.status_code == 429, now_job.text
            assert [j["name"] for j in ann.get(f"{API}/jobs").json()] == ["flood"]

            queued = ben.post(f"{API}/jobs/{late_job['id']}/run")
            assert queued.status_code == 202, queued.text
            late = wait_started(ben, queued.json()["id"])
            runs = ann.get(f"{API}/jobs/{flood_job['id']}/runs", params={"limit": 1000}).json()
            overtook = [
                r
                for r in runs
                if r["started"] and at(late["queued"]) < at(r["started"]) < at(late["started"])
            ]
            assert len(overtook) <= 1, (
                f"{len(overtook)} of {flooder}'s runs started while {other}'s run waited"
            )
        finally:
            assert ann.delete(f"{API}/jobs/{flood_job['id']}").status_code == 204
            assert ben.delete(f"{API}/jobs/{late_job['id']}").status_code == 204
        left = ann.get(f"{API}/runs/{accepted[-1].json()['id']}").json()
        assert left["status"] == "cancelled"  # deleting the job ended the flood
