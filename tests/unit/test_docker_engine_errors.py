"""The Docker spawner's reading of engine errors: a 500 from ``inspect`` (an engine busy
for a moment) is asked again and never taken for a dead server; only "gone" is gone.

DockerSpawner itself forgets the container on any 500 and tells the hub the server
stopped, which left a running container with its booked GPUs that nobody tracked (seen
on podman under load). The engine's answers are injected here; the containers tier runs
the same spawner against real podman."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import APIError

from werkhub.images.engine import engine_answer, inspect_patiently
from werkhub.spawners import docker as docker_backend
from werkhub.spawners.docker import WerkhubDockerSpawner


class Answer:
    def __init__(self, status: int) -> None:
        self.status_code, self.reason, self.url = status, "engine", "/containers/x/json"


def failure(status: int, explanation: str) -> APIError:
    return APIError(explanation, response=Answer(status), explanation=explanation)  # type: ignore[arg-type]


def spawner(answers: list[Any]) -> tuple[WerkhubDockerSpawner, list[str]]:
    user = SimpleNamespace(name="emil", id=1, url="/user/emil/", escaped_name="emil")
    made = WerkhubDockerSpawner(user=user)
    asked: list[str] = []

    async def engine(method: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(method)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    made.docker = engine  # type: ignore[method-assign]
    return made, asked


RUNNING = {"Id": "c0ffee", "State": {"Running": True}}


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_backend, "ENGINE_RETRIES", (0, 0, 0))


def test_engine_answers() -> None:
    assert engine_answer(404, "") == "gone"
    gone = "container abc does not exist in database: no such container"
    assert engine_answer(500, gone) == "gone"
    assert engine_answer(500, "no such container") == "gone"
    assert engine_answer(500, "database is locked") == "retry"
    assert engine_answer(503, "") == "retry"
    assert engine_answer(409, "conflict") == "error"


def test_a_passing_engine_error_leaves_the_server_running() -> None:
    made, asked = spawner([failure(500, "database is locked"), RUNNING])
    assert asyncio.run(made.poll()) is None  # running: not reported as stopped
    assert asked == ["inspect_container", "inspect_container"]
    assert made.object_id == "c0ffee"


def test_a_lasting_engine_error_is_not_a_stopped_server() -> None:
    made, asked = spawner([failure(500, "database is locked")] * 4)
    made.object_id = "c0ffee"
    assert asyncio.run(made.poll()) is None
    assert len(asked) == 4 and made.object_id == "c0ffee"  # the container is not forgotten


def test_a_gone_container_is_a_stopped_server() -> None:
    made, _ = spawner([failure(404, "not found")])
    made.object_id = "c0ffee"
    assert asyncio.run(made.poll()) == 0
    assert made.object_id == ""
    made, _ = spawner([failure(500, "no such container")])
    assert asyncio.run(made.poll()) == 0
    ended = {"Running": False, "ExitCode": 1, "Error": "", "FinishedAt": "then"}
    made, _ = spawner([{"Id": "c0ffee", "State": ended}])
    assert "ExitCode=1" in asyncio.run(made.poll())


def test_a_refusal_is_raised_not_retried() -> None:
    made, asked = spawner([failure(409, "conflict")])
    with pytest.raises(APIError):
        asyncio.run(made.get_object())
    assert asked == ["inspect_container"]


class Engine:
    """A docker-py API whose ``inspect_container`` gives ``answers`` in turn."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.asked = answers, 0

    def inspect_container(self, container: str) -> Any:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_job_run_asks_a_failing_engine_again() -> None:
    """A run's container is watched with inspect every half second for its whole run: one
    passing 500 there failed the run with an empty log (seen on podman under load)."""
    engine = Engine([failure(500, "database is locked"), failure(502, ""), RUNNING])
    assert inspect_patiently(engine, "run-1", pauses=(0, 0, 0)) == RUNNING
    assert engine.asked == 3
    lasting = Engine([failure(500, "database is locked")] * 4)
    with pytest.raises(APIError):
        inspect_patiently(lasting, "run-1", pauses=(0, 0, 0))
    assert lasting.asked == 4
    for final in (failure(404, "gone"), failure(500, "no such container"), failure(409, "")):
        once = Engine([final])
        with pytest.raises(APIError):
            inspect_patiently(once, "run-1", pauses=(0, 0, 0))
        assert once.asked == 1
