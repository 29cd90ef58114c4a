"""Reading the trace: the GPU node list and a task (pod) list, as the README describes them.

Node list columns: ``sn,cpu_milli,memory_mib,gpu,model``. Task list columns:
``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,
deletion_time,scheduled_time``; times are integer seconds since the trace's start,
``scheduled_time`` is empty for tasks that were never scheduled (``Pending``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

NODES_FILE = "openb_node_list_gpu_node.csv"
TASKS_FILE = "openb_pod_list_default.csv"
NODE_COLUMNS = ("sn", "gpu", "model")
TASK_COLUMNS = (
    "name",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)


@dataclass(frozen=True)
class Node:
    name: str
    gpus: int
    model: str


@dataclass(frozen=True)
class Task:
    name: str
    num_gpu: int
    gpu_milli: int
    #: allowed GPU models in the order given (empty: any)
    gpu_spec: tuple[str, ...]
    phase: str
    created: int
    deleted: int
    #: None for a task that was never scheduled
    scheduled: int | None


@dataclass(frozen=True)
class Trace:
    nodes: tuple[Node, ...]
    tasks: tuple[Task, ...]

    @property
    def end(self) -> int:
        """The largest time in the task list (seconds)."""
        times = [t.deleted for t in self.tasks] + [t.created for t in self.tasks]
        return max(times, default=0)

    @property
    def first_deletion(self) -> int:
        """When the trace's observed window begins: nothing ends before it (README)."""
        return min((t.deleted for t in self.tasks), default=0)

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)


def _rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}")
        return list(reader)


def read_nodes(path: Path) -> tuple[Node, ...]:
    """GPU nodes (rows with ``gpu`` > 0 and a model), in file order."""
    nodes = []
    for row in _rows(path, NODE_COLUMNS):
        gpus, model = int(row["gpu"]), row["model"].strip()
        if gpus > 0 and model:
            nodes.append(Node(name=row["sn"], gpus=gpus, model=model))
    return tuple(nodes)


def read_tasks(path: Path) -> tuple[Task, ...]:
    tasks = []
    for row in _rows(path, TASK_COLUMNS):
        scheduled = row["scheduled_time"].strip()
        tasks.append(
            Task(
                name=row["name"],
                num_gpu=int(row["num_gpu"]),
                gpu_milli=int(row["gpu_milli"]),
                gpu_spec=tuple(m for m in row["gpu_spec"].split("|") if m),
                phase=row["pod_phase"],
                created=int(row["creation_time"]),
                deleted=int(row["deletion_time"]),
                scheduled=int(scheduled) if scheduled else None,
            )
        )
    return tuple(tasks)


def read_trace(folder: Path, tasks_file: str = TASKS_FILE, nodes_file: str = NODES_FILE) -> Trace:
    """The trace in ``folder`` (the CSV files are read in place, never copied)."""
    folder = Path(folder)
    for name in (nodes_file, tasks_file):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: is {folder} the trace folder?")
    return Trace(nodes=read_nodes(folder / nodes_file), tasks=read_tasks(folder / tasks_file))
