"""What the service believes of a Docker job: the checks of a home notebook from the
engine's archive entries, which archive members come out of a container, the outcome built
from the exit code and the copied files (the container's own result.json only where it
agrees), and output streamed to disk under a byte cap (real tar archives, real files)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from werkhub.jobs.errors import SpecError
from werkhub.jobs.run import docker as docker_runner
from werkhub.jobs.run.manifests import (
    check_path_entry,
    home_notebook,
    observed_outcome,
    output_name,
)


@pytest.mark.parametrize(
    ("rel", "words"),
    [
        ("", "empty"),
        ("/etc/x.ipynb", "absolute"),
        ("~/x.ipynb", "absolute"),
        ("../ben/x.ipynb", "'..' is not allowed"),
        ("a/../../x.ipynb", "'..' is not allowed"),
        ("notes.txt", "must end in .ipynb"),
        ("a\\b.ipynb", "not allowed in a path"),
        ("/".join(["d"] * 40) + "/x.ipynb", "deep"),
    ],
)
def test_home_notebook_paths_follow_the_local_rules(rel: str, words: str) -> None:
    with pytest.raises(SpecError) as refused:
        home_notebook(rel)
    assert refused.value.field == "notebook" and words in refused.value.message


def test_a_good_home_notebook_path() -> None:
    assert str(home_notebook("reports/daily.ipynb")) == "reports/daily.ipynb"


def test_archive_entries_refuse_links_missing_and_odd_files() -> None:
    check_path_entry(("reports", "dir"), "reports", "reports/x.ipynb", False)
    check_path_entry(("x.ipynb", "file"), "reports/x.ipynb", "reports/x.ipynb", True)
    cases: list[tuple[tuple[str, str] | None, bool, str]] = [
        (None, True, "does not exist"),
        (("x.ipynb", "link"), True, "symbolic link"),  # Docker archives the link itself
        (("daily.ipynb", "file"), True, "symbolic link"),  # podman: the target's name
        (("x", "file"), False, "is not a folder"),
        (("x", "dir"), True, "not a regular file"),
        (("x", "other"), True, "not a regular file"),  # a device, a fifo
    ]
    for entry, last, words in cases:
        shown = "x.ipynb" if entry and entry[0].endswith(".ipynb") else "x"
        with pytest.raises(SpecError) as refused:
            check_path_entry(entry, shown, "x.ipynb", last)
        assert words in refused.value.message, (entry, refused.value.message)


@pytest.mark.parametrize(
    ("member", "regular", "expected"),
    [
        ("7/output.ipynb", True, "output.ipynb"),
        ("7/report.html", True, "report.html"),
        ("7/result.json", True, "container-result.json"),  # beside the service's own
        ("7/request.json", True, "container-request.json"),
        ("7/report.html", False, None),  # a link or folder under the name
        ("7/log.txt", True, None),
        ("7/sub/output.ipynb", True, None),
        ("7/../output.ipynb", True, None),
        ("/7/output.ipynb", True, None),
        ("output.ipynb", True, None),
    ],
)
def test_only_listed_regular_files_come_out(
    member: str, regular: bool, expected: str | None
) -> None:
    assert output_name(member, regular) == expected


def test_the_outcome_comes_from_the_exit_code() -> None:
    ok = {"status": "succeeded", "mlflow_run_id": "a" * 32}
    assert observed_outcome(0, ok, 3, "")["status"] == "succeeded"
    assert observed_outcome(0, ok, 3, "")["mlflow_run_id"] == "a" * 32
    # a claim of success that the exit code or the files contradict is a failure
    for exit_code, cells in ((1, 3), (143, 3), (2, 3), (0, None)):
        found = observed_outcome(exit_code, ok, cells, "tail")
        assert found["status"] == "failed", (exit_code, cells)
        assert f"exited with {exit_code}" in found["error"]
    assert "left no output notebook" in observed_outcome(0, ok, None, "")["error"]
    assert "result is missing" in observed_outcome(0, None, 3, "")["error"]
    failed = {"status": "failed", "error": "boom" * 2000, "failed_cell": 2}
    found = observed_outcome(1, failed, 3, "")
    assert found["status"] == "failed" and found["failed_cell"] == 2
    assert len(found["error"]) == 4000
    assert observed_outcome(1, {**failed, "failed_cell": 3}, 3, "")["failed_cell"] is None
    assert observed_outcome(1, {**failed, "failed_cell": True}, 3, "")["failed_cell"] is None
    assert observed_outcome(1, {"status": "timed_out"}, 3, "")["status"] == "timed_out"
    odd = {**ok, "mlflow_run_id": "../../runs/other"}
    assert observed_outcome(0, odd, 3, "")["mlflow_run_id"] is None


def archive(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("7")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def chunks(data: bytes, served: list[int] | None = None) -> Iterator[bytes]:
    """``data`` in chunks, as the engine's archive stream comes (counted in ``served``)."""
    for start in range(0, len(data), 4096):
        if served is not None:
            served.append(start)
        yield data[start : start + 4096]


def notebook(cells: int) -> bytes:
    return json.dumps({"cells": [{"cell_type": "code"}] * cells, "nbformat": 4}).encode()


def test_copy_out_keeps_regular_listed_files_and_no_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hub secret")
    files = {
        "7/output.ipynb": notebook(2),
        "7/result.json": json.dumps({"status": "succeeded"}).encode(),
        "7/request.json": b"{}",
        "7/extra.bin": b"x",
    }
    out = tmp_path / "out"
    out.mkdir()
    data = archive(files, {"7/report.html": str(secret), "7/../../x": "/etc"})
    assert docker_runner.extract_outputs(chunks(data), out, 1 << 20) is None
    found = sorted(p.name for p in out.iterdir())
    assert found == ["container-request.json", "container-result.json", "output.ipynb"]
    assert not (out / "report.html").exists() and secret.read_text() == "hub secret"


def test_output_past_the_cap_is_not_copied_and_fails_clearly(tmp_path: Path) -> None:
    big = archive({"7/output.ipynb": b"x" * (1024 * 1024)})
    served: list[int] = []
    error = docker_runner.extract_outputs(chunks(big, served), tmp_path, 64 * 1024)
    assert error is not None and "larger than 0.0625 MB" in error and "not copied" in error
    assert list(tmp_path.iterdir()) == []  # nothing half-written, the spool is gone
    assert len(served) * 4096 <= 64 * 1024 + 4096  # it stopped reading at the cap


def test_the_service_record_overrides_the_container_claim(tmp_path: Path) -> None:
    claim = {
        "status": "succeeded",
        "output_notebook": "/etc/passwd",
        "report": "/home/other/report.html",
        "timings": {"total_s": 0.001},
        "started": "2000-01-01T00:00:00Z",
        "finished": "2000-01-01T00:00:01Z",
    }
    (tmp_path / "container-result.json").write_text(json.dumps(claim))
    (tmp_path / "output.ipynb").write_bytes(notebook(3))
    (tmp_path / "container.log").write_text("werkhub job: terminated\n")
    started = datetime.now(UTC)
    outcome = docker_runner._observed(tmp_path, started, 143)  # SIGTERM, no clean exit
    assert outcome.status == "failed" and "exited with 143" in (outcome.error or "")
    assert outcome.started == started and outcome.timings["total_s"] >= 0
    assert outcome.output_notebook == str(tmp_path / "output.ipynb")
    assert outcome.report is None
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "failed" and record["started"] != claim["started"]
    (tmp_path / "output.ipynb").write_text("not a notebook")
    assert docker_runner._observed(tmp_path, started, 0).status == "failed"
    assert not (tmp_path / "output.ipynb").exists()
