"""Files in an OS user's home go in and come out as tar streams: a link the user planted
to a file outside the folder does not come out, nor does what is left behind on purpose."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from werkhub.slurm import homes


def me() -> pwd.struct_passwd:
    return pwd.getpwuid(os.geteuid())


def test_put_and_take_round_trip_without_what_stays_or_links_out(tmp_path: Path) -> None:
    stage = tmp_path / "home" / ".werkhub" / "jobs" / "run-1"
    tree = tmp_path / "template"
    (tree / "data").mkdir(parents=True)
    (tree / "data" / "a.csv").write_text("x,y\n")
    stream = homes.pack({"request.json": b'{"token": "t"}'}, {"work": tree})
    homes.put(me(), stage, stream)
    assert (stage / "request.json").read_bytes() == b'{"token": "t"}'
    assert (stage / "request.json").stat().st_mode & 0o777 == 0o600
    assert (stage / "work" / "data" / "a.csv").read_text() == "x,y\n"
    (stage / "report.html").write_text("<html>")
    (stage / "secret.txt").symlink_to("/etc/passwd")  # planted by the user
    out = tmp_path / "out"
    homes.take(me(), stage, out, leave=("request.json",))
    assert (out / "report.html").read_text() == "<html>"
    assert (out / "work" / "data" / "a.csv").is_file()
    assert not (out / "request.json").exists()
    assert not (out / "secret.txt").exists() and not (out / "secret.txt").is_symlink()
    homes.remove(me(), stage)
    assert not stage.exists()
