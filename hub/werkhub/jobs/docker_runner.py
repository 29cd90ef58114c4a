"""Run one job run in a container through the Docker Engine API (Docker, or podman's
Docker-compatible API): the owner's image and home volume, exactly the booked GPUs, a
non-root user without privileges, and a hard deadline.

The container runs ``python -m werkhub.jobs.execute`` of the werkhub package installed in
the curated images (their ``notebook`` extra), so papermill, the report and MLflow happen
inside, as the owner, next to their files. Afterwards the run's folder
(``/home/jovyan/.werkhub-jobs/RUN``: output.ipynb, report.html, result.json) is copied out
through the API into the scheduler's ``out_dir`` and the container is removed; the copy in
the home stays for the owner. The container's output goes to ``out_dir/container.log``.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from werkhub.jobs.containers import (
    GID,
    HOME,
    UID,
    container_out_dir,
    docker_job_spec,
    job_labels,
)
from werkhub.jobs.runner import RunOutcome, RunRequest

log = logging.getLogger("werkhub.jobs.docker_runner")

#: seconds the runner gives the container beyond the run's deadline (start-up, report)
GRACE_S = 30
#: largest output folder copied out of a container
MAX_COPY_BYTES = 512 * 1024 * 1024
#: a folder in ``out_dir`` (a template's private copy) that goes into the run's folder in
#: the container before it starts
STAGED = "work"


def resolve_image(
    image: str | None, images: Mapping[str, Any] | None, default_image: str
) -> tuple[str, dict[str, Any]]:
    """The image reference and its limits: ``image`` (or ``default_image``) looked up in
    ``images`` (catalog name -> tag, or -> {"image": tag, "mem_limit", "cpu_limit"}); a name
    not in ``images`` is used as the reference itself."""
    name = image or default_image
    entry = (images or {}).get(name)
    if entry is None:
        return name, {}
    if isinstance(entry, str):
        return entry, {}
    limits = {k: entry[k] for k in ("mem_limit", "cpu_limit") if entry.get(k) is not None}
    return str(entry.get("image") or name), limits


def home_volume_name(template: str, owner: str) -> str:
    """The owner's home volume as werkhub's Docker spawner names it: DockerSpawner puts the
    escaped user name into ``{username}`` (only a-z and 0-9 stay, anything else becomes
    ``-XX``, so "anna-b" has the volume werkhub-home-anna-2db)."""
    import string

    from escapism import escape

    safe = escape(owner, set(string.ascii_lowercase + string.digits), escape_char="-").lower()
    return template.format(username=safe, safe_username=safe, raw_username=owner)


def run_in_container(
    request: Mapping[str, Any] | RunRequest,
    *,
    base_url: str,
    image: str | None = None,
    images: Mapping[str, Any] | None = None,
    default_image: str = "base",
    home_volume: str = "werkhub-home-{username}",
    home: str | None = None,
    home_is_path: bool = False,
    host_network: bool = False,
    network: str | None = None,
    mem_limit: str | None = None,
    cpu_limit: float | None = None,
    device_ids: Sequence[str] | None = None,
    deadline_s: float | None = None,
    client: Any = None,
) -> RunOutcome:
    """Run ``request`` in a container and return its outcome (see the module notes).

    ``home_volume`` names the owner's home volume (``{username}`` is replaced); with
    ``home_is_path`` it is a host folder bind-mounted instead. ``deadline_s`` defaults to
    the request's deadline plus :data:`GRACE_S`; past it the container is killed and the
    outcome is ``timed_out``. Never raises for the notebook's or the container's failure."""
    import docker

    req = (
        request.model_dump(mode="json")
        if isinstance(request, RunRequest)
        else dict(request)  # the scheduler's plain dict
    )
    out_dir = Path(str(req["out_dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    ref, limits = resolve_image(image, images, default_image)
    volume = home_volume_name(home_volume, str(req["owner"]))
    spec = docker_job_spec(
        req,
        ref,
        volume,
        mem_limit=mem_limit or limits.get("mem_limit"),
        cpu_limit=cpu_limit if cpu_limit is not None else limits.get("cpu_limit"),
        device_ids=device_ids,
        home=home,
        host_network=host_network,
        network=network,
        home_is_path=home_is_path,
    )
    api = client or docker.APIClient(base_url=base_url, version="auto")
    limit = float(deadline_s or (int(req.get("deadline_s") or 3600) + GRACE_S))
    container = None
    try:
        if not home_is_path:
            _ensure_volume(api, volume, req["owner"])
        host_config = api.create_host_config(**spec["host_config"])
        name = f"werkhub-run-{req['run_id']}-{uuid.uuid4().hex[:8]}"
        create = {k: v for k, v in spec.items() if k != "host_config"}
        container = api.create_container(**create, host_config=host_config, name=name)["Id"]
        _stage(api, container, req, out_dir / STAGED)
        api.start(container)
        exit_code, timed_out = _wait(api, container, limit)
        _save_logs(api, container, out_dir / "container.log")
        if exit_code == SIGKILLED and not timed_out:
            # killed by someone else than this runner: the engine removing it (a restarted
            # service ending a crashed run's containers, an operator) or the memory limit
            return _failure(out_dir, started, "failed", _killed_message(api, container))
        if timed_out:
            _copy_out(api, container, req, out_dir)  # the output notebook as far as it got
            return _failure(
                out_dir,
                started,
                "timed_out",
                f"the run passed its deadline of {limit:.0f} s and its container was stopped",
            )
        _copy_out(api, container, req, out_dir)
        result = out_dir / "result.json"
        if result.exists():
            outcome = RunOutcome.model_validate_json(result.read_text())
            host = {"output_notebook": "output.ipynb", "report": "report.html"}
            for key, file in host.items():  # container paths -> the copies in out_dir
                setattr(outcome, key, str(out_dir / file) if (out_dir / file).exists() else None)
            result.write_text(outcome.model_dump_json(indent=2))
            return outcome
        tail = _tail(out_dir / "container.log")
        return _failure(
            out_dir, started, "failed", f"the job container exited with {exit_code}: {tail}"
        )
    except docker.errors.DockerException as exc:
        log.warning("job container for run %s failed: %s", req["run_id"], exc)
        return _failure(out_dir, started, "failed", f"container engine: {exc}"[:1000])
    finally:
        if container is not None:
            try:
                api.remove_container(container, force=True)
            except docker.errors.DockerException as exc:
                log.warning("could not remove job container %s: %s", container, exc)
        if client is None:
            api.close()


def end_run_containers(base_url: str, run_id: Any, client: Any = None) -> int:
    """Remove the containers of run ``run_id`` (a crashed service left them running; the
    run is marked interrupted and retried, so its old container must not go on writing).
    Returns how many were removed."""
    import docker

    api = client or docker.APIClient(base_url=base_url, version="auto")
    labels = [
        f"{k}={v}"
        for k, v in job_labels({"owner": "", "job_id": "", "run_id": run_id}).items()
        if k in ("app.kubernetes.io/component", "werkhub.run_id")
    ]
    removed = 0
    try:
        for found in api.containers(all=True, filters={"label": labels}):
            try:
                api.remove_container(found["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
    finally:
        if client is None:
            api.close()
    return removed


def _stage(api: Any, container: str, req: Mapping[str, Any], folder: Path) -> None:
    """Copy ``folder`` into the run's folder in the home volume, owned by the container's
    user (the home, ``/home/jovyan``, is the mount point, so the path is relative to it)."""
    if not folder.is_dir():
        return
    run_dir = PurePosixPath(container_out_dir(req)).relative_to(HOME)
    buffer = io.BytesIO()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = UID, GID, "", ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for part in range(1, len(run_dir.parts) + 1):  # the parents, owned by the user too
            parent = tarfile.TarInfo(str(PurePosixPath(*run_dir.parts[:part])))
            parent.type = tarfile.DIRTYPE
            archive.addfile(owned(parent))
        archive.add(folder, arcname=str(run_dir / folder.name), filter=owned)
    api.put_archive(container, HOME, buffer.getvalue())


def _ensure_volume(api: Any, volume: str, owner: str) -> None:
    import docker

    try:
        api.inspect_volume(volume)
    except docker.errors.NotFound:
        api.create_volume(volume, labels={"werkhub.user": str(owner)})


#: exit status of a process killed by SIGKILL (128 + 9)
SIGKILLED = 137


def _wait(api: Any, container: str, limit: float) -> tuple[int | None, bool]:
    """Exit code, or (None, True) after killing the container at ``limit`` seconds."""
    end = time.monotonic() + limit
    while True:
        state = api.inspect_container(container)["State"]
        if not state.get("Running") and state.get("Status") in ("exited", "dead", "stopped"):
            return int(state.get("ExitCode") or 0), False
        if time.monotonic() >= end:
            try:
                api.kill(container)
            except Exception as exc:  # already gone: fine
                log.info("kill %s: %s", container, exc)
            return None, True
        time.sleep(min(0.5, max(0.05, end - time.monotonic())))


def _killed_message(api: Any, container: str) -> str:
    try:
        oom = bool(api.inspect_container(container)["State"].get("OOMKilled"))
    except Exception:  # removed meanwhile: that is the engine's doing
        oom = False
    if oom:
        return "the job container ran out of memory and was killed (exit 137)"
    return (
        "container engine: the run's container was killed from outside the run (exit 137), "
        "by the engine removing it or by an operator"
    )


def _save_logs(api: Any, container: str, target: Path) -> None:
    try:
        target.write_bytes(api.logs(container, stdout=True, stderr=True))
    except Exception as exc:
        target.write_text(f"(no container log: {exc})\n")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-800:] or "(no output)"


def _copy_out(api: Any, container: str, req: Mapping[str, Any], out_dir: Path) -> bool:
    """Copy the run folder's regular files out of the container into ``out_dir``."""
    import docker

    try:
        stream, _ = api.get_archive(container, container_out_dir(req))
    except docker.errors.NotFound:
        return False
    data = io.BytesIO()
    for chunk in stream:
        data.write(chunk)
        if data.tell() > MAX_COPY_BYTES:
            log.warning("run folder of %s is over %d bytes; not copied", container, MAX_COPY_BYTES)
            return False
    data.seek(0)
    with tarfile.open(fileobj=data) as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts[1:]  # drop the run folder itself
            if not member.isfile() or not parts or ".." in parts or len(parts) > 1:
                continue  # flat folder of plain files; nothing else comes out
            source = archive.extractfile(member)
            if source is not None:
                (out_dir / parts[0]).write_bytes(source.read())
    return True


def _failure(out_dir: Path, started: datetime, status: str, error: str) -> RunOutcome:
    """The outcome of a run that wrote no result itself; written to result.json too."""
    now = datetime.now(UTC)
    outcome = RunOutcome(
        status=status,  # type: ignore[arg-type]
        error=error,
        started=started,
        finished=now,
        timings={"total_s": round((now - started).total_seconds(), 4)},
        output_notebook=str(out_dir / "output.ipynb")
        if (out_dir / "output.ipynb").exists()
        else None,
    )
    (out_dir / "result.json").write_text(outcome.model_dump_json(indent=2))
    return outcome
