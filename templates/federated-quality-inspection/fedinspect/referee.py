"""The ServerApp's bookkeeping around Flower's strategy and grid: the minimum number of
parties, one ``rounds.jsonl`` line per finished round, bytes through the grid per round, and
(test-only, run config ``record-messages``) a dump of every reply the aggregator receives."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.common import Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.serde import recorddict_to_proto
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

#: how often the ServerApp asks the SuperLink for replies (the simulation engine's pace)
PULL_SECONDS = 0.1


class RunEnded(Exception):
    """The run cannot go on; the message is a sentence for the owner (error.json)."""


def content_bytes(message: Message) -> int:
    return recorddict_to_proto(message.content).ByteSize() if message.has_content() else 0


def plain_content(message: Message) -> dict[str, dict[str, dict[str, Any]]]:
    """A message's records as plain Python/numpy values (what the recording switch dumps)."""
    content = message.content
    return {
        "arrays": {
            name: {key: array.numpy() for key, array in record.items()}
            for name, record in content.array_records.items()
        },
        "metrics": {name: dict(record) for name, record in content.metric_records.items()},
        "configs": {name: dict(record) for name, record in content.config_records.items()},
    }


class CountingGrid(Grid):
    """The ServerApp's grid, counting the bytes of message contents it sends and receives."""

    def __init__(self, inner: Grid, record_to: Path | None = None) -> None:
        self.inner = inner
        self.bytes_out = 0
        self.bytes_in = 0
        self.record_to = record_to
        self.round = 0
        self._seen = 0

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self.bytes_out += sum(content_bytes(m) for m in messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._received(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull every ``PULL_SECONDS`` until every message has its reply or
        ``timeout`` passed. Flower's own grid on a SuperLink looks every 3 s, so each
        exchange waited 1.5 s on average after the last reply had come in; SecAgg+ makes
        four or five exchanges a round."""
        messages = list(messages)
        self.bytes_out += sum(content_bytes(m) for m in messages)
        waiting = set(self.inner.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.inner.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if not waiting or (end is not None and time.monotonic() >= end):
                break
            time.sleep(PULL_SECONDS)
        self._received(replies)
        return replies

    def _received(self, replies: list[Message]) -> None:
        self.bytes_in += sum(content_bytes(m) for m in replies)
        if self.record_to is None:
            return
        self.record_to.mkdir(parents=True, exist_ok=True)
        for reply in replies:
            if not reply.has_content():
                continue
            self._seen += 1
            dump = {
                "round": self.round,
                "node": int(reply.metadata.src_node_id),
                "message_type": reply.metadata.message_type,
                "content": plain_content(reply),
            }
            path = self.record_to / f"reply-{self._seen:05d}.pkl"
            path.write_bytes(pickle.dumps(dump))


class Referee(Strategy):
    """Wraps Flower's strategy: waits for and enforces the minimum number of parties and
    writes a line to ``rounds.jsonl`` after each round's central evaluation."""

    def __init__(
        self,
        inner: Strategy,
        grid: CountingGrid,
        folder: Path,
        min_parties: int,
        wait_seconds: float,
        evaluate: Callable[[np.ndarray | list[np.ndarray]], tuple[float, dict[str, float]]],
    ) -> None:
        self.inner, self.grid, self.folder = inner, grid, folder
        self.min_parties, self.wait_seconds = min_parties, wait_seconds
        self.evaluate_global = evaluate
        self.aggregated: dict[int, int] = {}
        self.started = time.perf_counter()
        self.finished_rounds = 0
        self.last_metrics: dict[str, float] = {}
        self.last_parameters: list[np.ndarray] | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        self.grid.round = server_round
        self.started = time.perf_counter()
        self.grid.bytes_in = self.grid.bytes_out = 0
        if not client_manager.wait_for(self.min_parties, timeout=int(self.wait_seconds)):
            raise RunEnded(
                f"only {client_manager.num_available()} parties were connected in round "
                f"{server_round}; this federation needs at least {self.min_parties}"
            )
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, Any]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if len(results) < self.min_parties:
            raise RunEnded(
                f"only {len(results)} of {len(results) + len(failures)} parties replied in "
                f"round {server_round}; this federation needs at least {self.min_parties}"
            )
        self.aggregated[server_round] = len(results)
        parameters, metrics = self.inner.aggregate_fit(server_round, results, failures)
        if parameters is not None:  # FedAdam computes in float64: the model travels as float32
            arrays = [a.astype(np.float32) for a in parameters_to_ndarrays(parameters)]
            parameters = ndarrays_to_parameters(arrays)
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[Any], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        arrays = parameters_to_ndarrays(parameters)
        loss, metrics = self.evaluate_global(arrays)
        if server_round == 0:
            return loss, dict(metrics)
        if server_round not in self.aggregated:
            raise RunEnded(
                f"round {server_round} ended without an aggregate: too few parties completed "
                f"it (secure aggregation needs at least {self.min_parties} to unmask the sum)"
            )
        line = {
            "round": server_round,
            "parties": self.aggregated[server_round],
            "loss": loss,
            "metrics": metrics,
            "bytes_in": self.grid.bytes_in,
            "bytes_out": self.grid.bytes_out,
            "seconds": time.perf_counter() - self.started,
        }
        with (self.folder / "rounds.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        self.finished_rounds = server_round
        self.last_metrics = dict(metrics)
        self.last_parameters = arrays
        if self.grid.record_to is not None:
            names = [f"a{i}" for i in range(len(arrays))]
            np.savez(
                self.grid.record_to / f"global-round-{server_round}.npz",
                **dict(zip(names, arrays, strict=True)),
            )
        return loss, dict(metrics)


class DropoutTolerantSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, tolerating a party that is gone at the start of a round.

    Flower 1.42 keeps every party it sampled for a round in the unmasking stage's list of
    dropped parties, including one that never answered the setup (stage 0), and then looks
    for shares of that party's keys, which no one holds: a party that died between two
    rounds (a SIGKILL, say: Flower still counts it as connected for up to a minute) ends the
    round. Such a party never got or gave any key, so no mask involves it; here it is left
    out of the round right after the setup, as if it had not been sampled. Dropouts in later
    stages are Flower's own: their masks are rebuilt from the others' shares."""

    def setup_stage(self, grid: Grid, context: Any, state: Any) -> bool:
        ready = super().setup_stage(grid, context, state)
        answered = set(state.active_node_ids)
        state.sampled_node_ids = answered
        state.nid_to_neighbours = {
            nid: neighbours & answered
            for nid, neighbours in state.nid_to_neighbours.items()
            if nid in answered
        }
        return ready and self._check_threshold(state)
