"""Pure builders for running a job run in a container: the Docker create-container
arguments and the Kubernetes batch/v1 Job manifest (plain dicts, tested without a daemon or
cluster). Standard library, pydantic and ``werkhub.gpus.devices`` only.

Inside the container the owner's home is mounted at ``/home/jovyan`` (as for their server),
so the run request is rewritten to container paths: the notebook and working folder keep
their place relative to the home, and the run's output folder is
``/home/jovyan/.werkhub-jobs/RUN`` (the owner sees their job outputs in their home; the
runner copies them out to the scheduler's folder afterwards). The request travels in the
environment variable ``WERKHUB_RUN_REQUEST`` and the command is
``python -m werkhub.jobs.run.execute --request-env WERKHUB_RUN_REQUEST``.

GPUs: only the booked devices (Docker ``DeviceRequests`` by id, never ``Count: -1``; the
Kubernetes device plugin's resource with an explicit count); CPU jobs get none, and the
environment says so (``NVIDIA_VISIBLE_DEVICES=void``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from werkhub.errors import Invalid
from werkhub.gpus.devices import (
    CPU_ONLY_ENV,
    GpuAssignment,
    KubeResourceNames,
    kube_node_selector,
    kube_resources,
    kube_tolerations,
)

HOME = "/home/jovyan"
JOBS_FOLDER = ".werkhub-jobs"
REQUEST_ENV = "WERKHUB_RUN_REQUEST"
UID, GID = 1000, 100
COMMAND = ["python", "-m", "werkhub.jobs.run.execute", "--request-env", REQUEST_ENV]

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")


class ContainerSpecError(Invalid, ValueError):
    """A run cannot be put into a container as asked; the message says why."""


def _inside(path: str, home: str | None, what: str) -> PurePosixPath:
    """``path`` (absolute on the host, inside ``home``) as a path relative to the home."""
    pure = PurePosixPath(path)
    if home is None:
        raise ContainerSpecError(f"{what}: the owner's home folder on the host is not known")
    try:
        rel = pure.relative_to(PurePosixPath(home))
    except ValueError:
        raise ContainerSpecError(
            f"{what} {path} is not in the owner's home {home}; a container sees only the home"
        ) from None
    if ".." in rel.parts:
        raise ContainerSpecError(f"{what} {path} leaves the owner's home")
    return rel


def container_request(req: Mapping[str, Any], home: str | None) -> dict[str, Any]:
    """The run request with container paths (see the module notes). ``home`` is the owner's
    home as the request's host paths name it; without it the request's ``notebook_label``
    (the notebook's path in the home) places the notebook, and its folder is the cwd."""
    label = req.get("notebook_label")
    if home is None and label:
        notebook = PurePosixPath(str(label))
        if notebook.is_absolute() or ".." in notebook.parts:
            raise ContainerSpecError(f"notebook_label {label} is not a path in the home")
        cwd = notebook.parent
    else:
        notebook = _inside(str(req["notebook"]), home, "notebook")
        cwd_host = str(req.get("cwd") or PurePosixPath(str(req["notebook"])).parent)
        cwd = _inside(cwd_host, home, "cwd")
    out = {k: v for k, v in req.items() if k != "home"}
    out["notebook"] = str(PurePosixPath(HOME) / notebook)
    out["cwd"] = str(PurePosixPath(HOME) / cwd)
    out["out_dir"] = container_out_dir(req)
    out["notebook_label"] = str(label or notebook)
    return json.loads(json.dumps(out, default=str))


def container_out_dir(req: Mapping[str, Any]) -> str:
    run = _LABEL_VALUE.sub("-", str(req["run_id"])).strip("-") or "run"
    return f"{HOME}/{JOBS_FOLDER}/{run}"


def label_value(value: Any) -> str:
    """A Kubernetes-safe label value (63 characters, alphanumerics at both ends)."""
    text = _LABEL_VALUE.sub("-", str(value))[:63].strip("-._")
    return text or "none"


def job_labels(req: Mapping[str, Any]) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "werkhub",
        "app.kubernetes.io/component": "job-run",
        "werkhub.owner": label_value(req["owner"]),
        "werkhub.job_id": label_value(req["job_id"]),
        "werkhub.run_id": label_value(req["run_id"]),
    }


def gpu_env(device_ids: Sequence[str] | None) -> dict[str, str]:
    if not device_ids:
        return {**CPU_ONLY_ENV, "WERKHUB_GPU_COUNT": "0"}
    return {
        "NVIDIA_VISIBLE_DEVICES": ",".join(device_ids),
        "WERKHUB_GPU_COUNT": str(len(device_ids)),
    }


def docker_job_spec(
    req: Mapping[str, Any],
    image: str,
    home_volume: str,
    mem_limit: str | None = None,
    cpu_limit: float | None = None,
    device_ids: Sequence[str] | None = None,
    *,
    home: str | None = None,
    host_network: bool = False,
    network: str | None = None,
    home_is_path: bool = False,
) -> dict[str, Any]:
    """Arguments of the Docker Engine API's create-container for one run:
    ``{"image", "command", "user", "working_dir", "environment", "labels", "host_config"}``
    with ``host_config`` as keyword arguments of docker-py's ``create_host_config``.

    ``home_volume`` is the owner's named home volume (or, with ``home_is_path``, a host
    folder bind-mounted instead); ``home`` is the home as the request's paths name it
    (default: the request's ``home`` key). ``device_ids`` are the booked devices'
    container-toolkit ids (``werkhub.gpus.devices.device_id``); none means CPU only."""
    if device_ids is not None and any(not d or d in ("all", "-1") for d in device_ids):
        raise ContainerSpecError("GPU devices must be named one by one; 'all' is never given")
    inner = container_request(req, home or req.get("home"))
    environment = {**gpu_env(device_ids), REQUEST_ENV: json.dumps(inner)}
    mount = {
        "Type": "bind" if home_is_path else "volume",
        "Source": home_volume,
        "Target": HOME,
        "ReadOnly": False,
    }
    host_config: dict[str, Any] = {
        "privileged": False,
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": 4096,
        "mounts": [mount],
        "device_requests": (
            [{"Driver": "nvidia", "DeviceIDs": list(device_ids), "Capabilities": [["gpu"]]}]
            if device_ids
            else []
        ),
        "network_mode": "host" if host_network else (network or "bridge"),
    }
    if mem_limit is not None:
        host_config["mem_limit"] = mem_limit
    if cpu_limit is not None:
        if cpu_limit <= 0:
            raise ContainerSpecError(f"cpu_limit must be positive (got {cpu_limit})")
        host_config["nano_cpus"] = int(cpu_limit * 1e9)
    labels = {**job_labels(req), "werkhub.devices": ",".join(device_ids or [])}
    return {
        "image": image,
        "command": list(COMMAND),
        "user": f"{UID}:{GID}",
        "working_dir": inner["cwd"],
        "environment": environment,
        "labels": labels,
        "host_config": host_config,
    }


def kube_job_manifest(
    req: Mapping[str, Any],
    image: str,
    *,
    namespace: str = "werkhub",
    home: str | None = None,
    claim_name: str | None = None,
    assignment: GpuAssignment | None = None,
    resource_names: KubeResourceNames | None = None,
    mem_limit: str | None = None,
    cpu_limit: float | None = None,
    product_names: Mapping[str, str] | None = None,
    ttl_seconds_after_finished: int = 24 * 3600,
) -> dict[str, Any]:
    """A ``batch/v1`` Job running one job run in the owner's home (its PVC, by default
    Zero to JupyterHub's ``claim-OWNER``). ``backoffLimit: 0`` (werkhub retries itself, per
    the job's policy) and ``activeDeadlineSeconds`` = the run's deadline. The booked GPUs
    come as the device plugin's resource (``nvidia.com/gpu`` or a MIG resource), with a node
    selector and the GPU toleration; CPU jobs get an explicit zero."""
    inner = container_request(req, home or req.get("home"))
    labels = job_labels(req)
    name = f"werkhub-run-{label_value(req['run_id']).lower()}"[:63].rstrip("-.")
    resources = kube_resources(assignment, resource_names)
    if mem_limit is not None:
        resources["limits"]["memory"] = mem_limit
        resources["requests"]["memory"] = mem_limit
    if cpu_limit is not None:
        resources["limits"]["cpu"] = str(cpu_limit)
        resources["requests"]["cpu"] = str(cpu_limit)
    env = (
        {**gpu_env(None), REQUEST_ENV: json.dumps(inner)}
        if assignment is None or (assignment.simulated)
        else {"WERKHUB_GPU_COUNT": str(assignment.count), REQUEST_ENV: json.dumps(inner)}
    )
    container = {
        "name": "job",
        "image": image,
        "command": list(COMMAND),
        "workingDir": inner["cwd"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": GID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "home", "mountPath": HOME}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsUser": UID, "runAsGroup": GID, "fsGroup": GID},
        "containers": [container],
        "volumes": [
            {
                "name": "home",
                "persistentVolumeClaim": {"claimName": claim_name or f"claim-{req['owner']}"},
            }
        ],
    }
    selector = kube_node_selector(assignment, product_names=product_names)
    if selector:
        pod_spec["nodeSelector"] = selector
    tolerations = kube_tolerations(assignment)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(req.get("deadline_s") or 3600),
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


# ---- what the service checks itself (pure rules; the Docker runner does the I/O) -------

#: files of a run folder that come out of a container; nothing else does
OUTPUT_FILES = ("output.ipynb", "report.html", "result.json", "results.json", "request.json")
#: the container's own records land beside the service's, never in their place
RENAMED = {"result.json": "container-result.json", "request.json": "container-request.json"}
MAX_DEPTH = 32
_MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")
_NOTEBOOK = "notebook"


def home_notebook(rel: str) -> PurePosixPath:
    """The notebook ``rel`` as a path in the home: the rules of
    ``werkhub.jobs.paths.resolve_notebook`` that need no file system (the engine's archive
    entries check the rest, :func:`check_path_entry`), and at most ``MAX_DEPTH`` folders
    deep; SpecError("notebook", ...) otherwise."""
    from werkhub.jobs.errors import SpecError
    from werkhub.jobs.paths import FIELD, notebook_path

    pure = notebook_path(rel)
    if len(pure.parts) > MAX_DEPTH:
        raise SpecError(FIELD, f"'{rel}' is nested more than {MAX_DEPTH} folders deep")
    return pure


def check_path_entry(entry: tuple[str, str] | None, shown: str, rel: str, last: bool) -> None:
    """One component ``shown`` of a home notebook's path, as the first entry of the
    engine's archive of it: (name, kind) with kind dir, file, link or other; None: not
    found. Docker archives a symbolic link as the link, podman as what it points to
    under that one's name: either way the entry must be the component itself, a folder
    on the way and a regular file at the end. SpecError("notebook", ...) otherwise."""
    from werkhub.jobs.errors import SpecError

    if entry is None:
        raise SpecError(_NOTEBOOK, f"'{rel}' does not exist in your home folder")
    name, kind = entry
    if kind == "link" or name.rstrip("/") != PurePosixPath(shown).name:
        raise SpecError(
            _NOTEBOOK,
            f"'{shown}' is a symbolic link; jobs only run notebooks stored in your home",
        )
    if not last and kind != "dir":
        raise SpecError(_NOTEBOOK, f"'{shown}' is not a folder")
    if last and kind != "file":
        raise SpecError(_NOTEBOOK, f"'{rel}' is not a regular file")


def output_name(member: str, regular: bool) -> str | None:
    """Where a member of the run folder's archive goes in ``out_dir``: one of
    :data:`OUTPUT_FILES` directly in the folder, a regular file (the container's records
    renamed, :data:`RENAMED`); else None (left out).
    No absolute path, ``..``, link or sub-folder ever comes out."""
    parts = PurePosixPath(member).parts
    if not regular or len(parts) != 2 or member.startswith("/") or ".." in parts:
        return None
    return RENAMED.get(parts[1], parts[1]) if parts[1] in OUTPUT_FILES else None


def observed_outcome(
    exit_code: int,
    claim: Mapping[str, Any] | None,
    notebook_cells: int | None,
    tail: str,
) -> dict[str, Any]:
    """The outcome of a container that exited by itself, from what the service saw: the
    exit code and the output notebook it copied out and read (``notebook_cells``: its
    number of cells, None when there is none). The container's own result (``claim``)
    adds only what agrees with that: a status that matches the exit code, a failed cell
    inside the notebook, an MLflow run id of MLflow's form, texts cut to size."""
    claimed = str((claim or {}).get("status") or "")
    if exit_code == 0 and claimed == "succeeded" and notebook_cells is not None:
        status, error = "succeeded", None
    elif exit_code == 1 and claimed in ("failed", "timed_out"):
        status, error = claimed, _text((claim or {}).get("error")) or "the notebook failed"
    elif exit_code in (0, 1):
        said = f"says '{claimed}'" if claimed else "is missing"
        status = "failed"
        error = (
            f"the job container exited with {exit_code} but its result {said}"
            + ("" if notebook_cells is not None else " and it left no output notebook")
            + f": {tail}"
        )
    else:
        status, error = "failed", f"the job container exited with {exit_code}: {tail}"
    cell = (claim or {}).get("failed_cell")
    run_id = (claim or {}).get("mlflow_run_id")
    return {
        "status": status,
        "error": error,
        "failed_cell": cell
        if status != "succeeded"
        and isinstance(cell, int)
        and not isinstance(cell, bool)
        and notebook_cells is not None
        and 0 <= cell < notebook_cells
        else None,
        "mlflow_run_id": run_id
        if isinstance(run_id, str) and _MLFLOW_RUN_ID.fullmatch(run_id)
        else None,
        "mlflow_error": _text((claim or {}).get("mlflow_error")),
    }


def _text(value: Any, limit: int = 4000) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None
