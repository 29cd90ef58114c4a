"""Run one job run in a container through the Docker Engine API (Docker, or podman's
Docker-compatible API): the owner's image and home volume, exactly the booked GPUs, a
non-root user without privileges, and a hard deadline.

The container runs ``python -m werkhub.jobs.run.execute`` of the werkhub package installed in
the curated images (their ``notebook`` extra), so papermill, the report and MLflow happen
inside, as the owner, next to their files. Afterwards the run's folder
(``/home/jovyan/.werkhub-jobs/RUN``: output.ipynb, report.html, result.json) is copied out
through the API into the scheduler's ``out_dir`` and the container is removed; the copy in
the home stays for the owner. The container's output goes to ``out_dir/container.log``.

The service trusts what it sees, not what the container says. Before the container
starts, a notebook from the owner's home gets the checks of a local job (a path in the
home without symbolic links, read through the engine, and the run's parameters against
its ``parameters`` cell). Afterwards the outcome comes from the exit code, the files
copied out (only output.ipynb, report.html, results.json and the container's records
result.json and request.json, renamed ``container-*.json``: regular files,
streamed to disk up to :data:`MAX_COPY_BYTES`, never a link, ``..`` or absolute path) and
the service's own clock; the container's result.json (kept as ``container-result.json``)
adds only fields that agree with those (``containers.observed_outcome``).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from werkhub.images.engine import inspect_patiently
from werkhub.jobs.errors import SpecError
from werkhub.jobs.run.manifests import (
    GID,
    HOME,
    REQUEST_ENV,
    UID,
    check_path_entry,
    container_out_dir,
    docker_job_spec,
    home_notebook,
    job_labels,
    observed_outcome,
    output_name,
)
from werkhub.jobs.run.notebook import RunOutcome, RunRequest

log = logging.getLogger("werkhub.jobs.run.docker")

#: seconds the runner gives the container beyond the run's deadline (start-up, report)
GRACE_S = 30
#: largest output folder copied out of a container (streamed to disk, never into memory)
MAX_COPY_BYTES = 512 * 1024 * 1024
#: largest notebook read from the owner's home for the checks before the start
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
#: largest container log kept in ``container.log``
MAX_LOG_BYTES = 16 * 1024 * 1024
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
        try:
            _check_notebook(api, container, req, json.loads(spec["environment"][REQUEST_ENV]))
        except SpecError as exc:  # the same refusal a local job gets, before any code runs
            return _failure(out_dir, started, "failed", f"{exc.field}: {exc.message}")
        api.start(container)
        exit_code, timed_out = _wait(api, container, limit)
        _save_logs(api, container, out_dir / "container.log")
        if exit_code == SIGKILLED and not timed_out:
            # killed by someone else than this runner: the engine removing it (a restarted
            # service ending a crashed run's containers, an operator) or the memory limit
            return _failure(out_dir, started, "failed", _killed_message(api, container))
        too_big = _copy_out(api, container, req, out_dir)
        if timed_out:  # the output notebook as far as it got
            return _failure(
                out_dir,
                started,
                "timed_out",
                f"the run passed its deadline of {limit:.0f} s and its container was stopped"
                + (f"; {too_big}" if too_big else ""),
            )
        if too_big:
            return _failure(out_dir, started, "failed", too_big)
        assert exit_code is not None
        return _observed(out_dir, started, exit_code)
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


def remove_home_volume(
    base_url: str, owner: str, template: str = "werkhub-home-{username}", client: Any = None
) -> bool:
    """Remove the home volume of ``owner`` (a deleted user's files), together with any
    stopped container that still holds it. True when a volume was removed."""
    import docker

    api = client or docker.APIClient(base_url=base_url, version="auto")
    try:
        api.remove_volume(home_volume_name(template, owner), force=True)
        return True
    except docker.errors.NotFound:
        return False
    finally:
        if client is None:
            api.close()


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
        state = inspect_patiently(api, container)["State"]
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
        oom = bool(inspect_patiently(api, container)["State"].get("OOMKilled"))
    except Exception:  # removed meanwhile: that is the engine's doing
        oom = False
    if oom:
        return "the job container ran out of memory and was killed (exit 137)"
    return (
        "container engine: the run's container was killed from outside the run (exit 137), "
        "by the engine removing it or by an operator"
    )


def _save_logs(api: Any, container: str, target: Path) -> None:
    """The container's output, streamed to ``target`` up to :data:`MAX_LOG_BYTES`."""
    try:
        written = 0
        with target.open("wb") as out:
            for chunk in api.logs(container, stdout=True, stderr=True, stream=True):
                if written + len(chunk) > MAX_LOG_BYTES:
                    out.write(chunk[: MAX_LOG_BYTES - written])
                    out.write(b"\n(log cut at %d bytes)\n" % MAX_LOG_BYTES)
                    break
                out.write(chunk)
                written += len(chunk)
    except Exception as exc:
        target.write_text(f"(no container log: {exc})\n")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-800:] or "(no output)"


def _copy_out(api: Any, container: str, req: Mapping[str, Any], out_dir: Path) -> str | None:
    """Copy the run folder's output files out of the container into ``out_dir`` (see
    :func:`extract_outputs`); returns why nothing was copied when the output is too big."""
    import docker

    try:
        stream, _ = api.get_archive(container, container_out_dir(req))
    except docker.errors.NotFound:
        return None
    error = extract_outputs(stream, out_dir, MAX_COPY_BYTES)
    if error:
        log.warning("run folder of %s is over %d bytes; not copied", container, MAX_COPY_BYTES)
    return error


def extract_outputs(stream: Iterable[bytes], out_dir: Path, limit: int) -> str | None:
    """The chunks of a run folder's tar archive, spooled to a temporary file in
    ``out_dir`` up to ``limit`` bytes, then only its output files
    (``containers.output_name``: regular files directly in the folder) written to
    ``out_dir``, the container's result.json as ``container-result.json``. Past ``limit``
    nothing is written and the answer says why."""
    with tempfile.TemporaryFile(dir=out_dir) as spool:
        if not _spool(stream, spool, limit):
            return (
                f"the run's output folder is larger than {limit / 2**20:g} MB and was not "
                "copied out; write less into the output notebook (large results belong in "
                "files of your home or in MLflow artifacts)"
            )
        spool.seek(0)
        with tarfile.open(fileobj=spool) as archive:
            for member in archive:
                name = output_name(member.name, member.isreg())
                source = archive.extractfile(member) if name else None
                if name is None or source is None:
                    continue  # a link, a folder, anything else stays in the container
                target = out_dir / name
                target.unlink(missing_ok=True)  # never write through a link put there
                with source, target.open("xb") as out:
                    shutil.copyfileobj(source, out)
    return None


def _spool(stream: Iterable[bytes], target: Any, limit: int) -> bool:
    """Write the chunks of ``stream`` to ``target``; False as soon as they pass ``limit``."""
    written = 0
    try:
        for chunk in stream:
            written += len(chunk)
            if written > limit:
                return False
            target.write(chunk)
        return True
    finally:
        getattr(stream, "close", lambda: None)()


def _observed(out_dir: Path, started: datetime, exit_code: int) -> RunOutcome:
    """The outcome of a container that exited by itself (see ``observed_outcome``),
    written to ``out_dir/result.json`` as the service's own record."""
    claim: dict[str, Any] | None = None
    try:
        loaded = json.loads((out_dir / "container-result.json").read_text())
        claim = loaded if isinstance(loaded, dict) else None
    except (OSError, ValueError):
        claim = None
    cells = _cell_count(out_dir / "output.ipynb")
    if cells is None:
        (out_dir / "output.ipynb").unlink(missing_ok=True)  # not a notebook: not shown
    fields = observed_outcome(exit_code, claim, cells, _tail(out_dir / "container.log"))
    now = datetime.now(UTC)
    report = out_dir / "report.html"
    outcome = RunOutcome(
        **fields,
        started=started,
        finished=now,
        timings={"total_s": round((now - started).total_seconds(), 4)},
        output_notebook=str(out_dir / "output.ipynb") if cells is not None else None,
        report=str(report) if report.is_file() else None,
    )
    (out_dir / "result.json").write_text(outcome.model_dump_json(indent=2))
    return outcome


def _cell_count(path: Path) -> int | None:
    """The number of cells of the notebook at ``path``, or None when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cells = data.get("cells") if isinstance(data, dict) else None
    return len(cells) if isinstance(cells, list) else None


def _check_notebook(api: Any, container: str, req: Mapping[str, Any], inner: dict) -> None:
    """A notebook from the owner's home gets a local job's checks, read through the
    engine from the created (not yet started) container: the path (no symbolic link on
    the way, a regular file) and the run's parameters against its ``parameters`` cell.
    A template's staged copy is the service's own and was checked when it was made."""
    from werkhub.jobs.params import parameters_of, validate_parameters

    notebook = PurePosixPath(str(inner["notebook"]))
    if notebook.is_relative_to(container_out_dir(req)):
        return
    try:
        rel = notebook.relative_to(HOME)
    except ValueError:
        raise SpecError("notebook", f"'{notebook}' is not in your home folder") from None
    pure = home_notebook(str(rel))
    for i in range(len(pure.parts)):
        shown = "/".join(pure.parts[: i + 1])
        asked = f"{HOME}/{shown}"
        last = i == len(pure.parts) - 1
        check_path_entry(_entry(api, container, asked), shown, str(pure), last)
    data = _read_file(api, container, f"{HOME}/{pure}", MAX_NOTEBOOK_BYTES)
    if data is None:
        raise SpecError("notebook", f"'{pure}' is not a regular file of at most 64 MB")
    try:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("cells"), list):
            raise ValueError("no list of cells")
    except ValueError as exc:
        raise SpecError("notebook", f"'{pure}' is not a readable notebook: {exc}") from None
    validate_parameters(parameters_of(parsed), dict(req.get("parameters") or {}))


def _entry(api: Any, container: str, path: str) -> tuple[str, str] | None:
    """The first entry of the engine's archive of ``path`` as (name, kind), reading only
    its header (a folder's content is never fetched); None when it does not exist."""
    url = api._url("/containers/{0}/archive", container)
    reply = api._get(
        url, params={"path": path}, stream=True, headers={"Accept-Encoding": "identity"}
    )
    try:
        if reply.status_code == 404:
            return None
        api._raise_for_status(reply)
        with tarfile.open(fileobj=reply.raw, mode="r|") as archive:
            first = archive.next()
        if first is None:
            return None
        kind = (
            "link"
            if first.issym() or first.islnk()
            else "dir"
            if first.isdir()
            else "file"
            if first.isreg()
            else "other"
        )
        return first.name, kind
    finally:
        reply.close()


def _read_file(api: Any, container: str, path: str, limit: int) -> bytes | None:
    """The one regular file at ``path`` (at most ``limit`` bytes), or None."""
    import docker

    try:
        stream, _ = api.get_archive(container, path)
    except docker.errors.NotFound:
        return None
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
        if not _spool(stream, spool, limit + 64 * 1024):  # the tar headers come on top
            return None
        spool.seek(0)
        with tarfile.open(fileobj=spool) as archive:
            members = archive.getmembers()
            if len(members) != 1 or not members[0].isreg() or members[0].size > limit:
                return None
            if members[0].name != PurePosixPath(path).name:
                return None  # a link that the engine followed
            source = archive.extractfile(members[0])
            return source.read() if source is not None else None


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
        if _cell_count(out_dir / "output.ipynb") is not None
        else None,
    )
    (out_dir / "result.json").write_text(outcome.model_dump_json(indent=2))
    return outcome
