"""The JupyterLab extension: the committed build matches its sources and is shipped where
Jupyter finds it; the server extension's decisions on booking-end warnings."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from werkhub_widgets.serverext import current_warnings, server_booking, summarise

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "extensions" / "werkhub_lab"
BUILT = ROOT / "extensions" / "werkhub_widgets" / "labextension" / "werkhub-lab"


def _hash_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("source_hash", SOURCE / "source_hash.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_build_matches_the_sources() -> None:
    hashing = _hash_module()
    recorded = (BUILT / "build-source.sha256").read_text().strip()
    assert recorded == hashing.source_hash(), (
        "extensions/werkhub_lab changed since the last build: run `make labext`"
    )


def test_source_hash_sees_every_source_change(tmp_path: Path) -> None:
    hashing = _hash_module()
    for name in ("package.json", "tsconfig.json", "yarn.lock", ".yarnrc.yml"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "src").mkdir()
    (tmp_path / "style").mkdir()
    (tmp_path / "src" / "index.ts").write_text("export default 1;\n")
    before = hashing.source_hash(tmp_path)
    (tmp_path / "src" / "index.ts").write_text("export default 2;\n")
    assert hashing.source_hash(tmp_path) != before
    (tmp_path / "src" / "index.ts").write_text("export default 1;\r\n")  # line endings only
    assert hashing.source_hash(tmp_path) == before


def test_build_output_is_a_loadable_federated_extension() -> None:
    meta = json.loads((BUILT / "package.json").read_text())
    source_meta = json.loads((SOURCE / "package.json").read_text())
    assert meta["name"] == source_meta["name"] == "werkhub-lab"
    entry = BUILT / meta["jupyterlab"]["_build"]["load"]
    assert entry.is_file()
    bundle = "".join(p.read_text() for p in (BUILT / "static").glob("*.js"))
    for needle in ("werkhub/notifications", "Template gallery", "werkhub_widgets import gallery"):
        assert needle in bundle, needle
    # no asset from a CDN: everything the bundle loads is relative to the extension
    assert "https://" not in entry.read_text()


def test_wheel_ships_the_extension_where_jupyter_looks() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shared = config["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert (
        shared["extensions/werkhub_widgets/labextension/werkhub-lab"]
        == "share/jupyter/labextensions/werkhub-lab"
    )
    switch = next(k for k, v in shared.items() if v.startswith("etc/jupyter/jupyter_server_config"))
    enabled = json.loads((ROOT / switch).read_text())["ServerApp"]["jpserver_extensions"]
    assert enabled == {"werkhub_widgets.serverext": True}
    hub_side = ROOT / "hub" / "werkhub" / "app" / "jupyter_config" / "jupyter_server_config.json"
    assert json.loads(hub_side.read_text())["ServerApp"]["jpserver_extensions"] == enabled


# ---- the server extension's pure decisions -------------------------------------------------
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _booking(booking_id: int, end: datetime, warned: list[datetime]) -> dict:
    return {
        "id": booking_id,
        "gpu_type": "H100",
        "count": 1,
        "state": "active",
        "end": end.isoformat().replace("+00:00", "Z"),
        "end_local": end.astimezone().isoformat(),
        "audit": [
            {"at": NOW.isoformat(), "actor": "werkhub", "action": "activate", "detail": {}},
            *(
                {
                    "at": NOW.isoformat(),
                    "actor": "werkhub",
                    "action": "warn",
                    "detail": {"end": w.isoformat()},
                }
                for w in warned
            ),
        ],
    }


def _note(note_id: int, booking_id: int, kind: str = "booking_ending") -> dict:
    return {"id": note_id, "kind": kind, "message": f"m{note_id}", "booking_id": booking_id}


def test_a_warned_booking_gives_one_warning_from_its_newest_notice() -> None:
    end = NOW + timedelta(minutes=10)
    found = current_warnings([_note(7, 1), _note(3, 1)], [_booking(1, end, [end])], NOW)
    assert [(w["booking_id"], w["notification_id"], w["message"]) for w in found] == [(1, 7, "m7")]
    assert found[0]["key"] == f"1@{end.isoformat()}"


def test_an_extended_booking_has_no_warning_until_warned_again() -> None:
    old, new = NOW + timedelta(minutes=10), NOW + timedelta(minutes=70)
    assert current_warnings([_note(7, 1)], [_booking(1, new, [old])], NOW) == []
    # the service warns again for the new end: a new key, so the front end shows it
    again = current_warnings([_note(9, 1), _note(7, 1)], [_booking(1, new, [old, new])], NOW)
    assert [w["key"] for w in again] == [f"1@{new.isoformat()}"]


def test_no_warning_for_ended_foreign_or_unwarned_bookings() -> None:
    end = NOW + timedelta(minutes=5)
    assert current_warnings([_note(1, 2)], [_booking(1, end, [end])], NOW) == []
    assert current_warnings([_note(1, 1)], [_booking(1, NOW, [NOW])], NOW) == []
    assert current_warnings([_note(1, 1, "no_show")], [_booking(1, end, [end])], NOW) == []
    assert current_warnings([_note(1, 1)], [_booking(1, end, [])], NOW) == []


def test_the_server_booking_is_its_own_else_the_first_to_end() -> None:
    first, later = (
        _booking(1, NOW + timedelta(hours=1), []),
        _booking(2, NOW + timedelta(hours=3), []),
    )
    assert server_booking([later, first], "2")["id"] == 2
    assert server_booking([later, first], None)["id"] == 1
    assert server_booking([], "2") is None


def test_summary_reads_its_settings_from_the_environment() -> None:
    env = {"JUPYTERHUB_BASE_URL": "/lab-hub/", "WERKHUB_LAB_POLL_SECONDS": "5"}
    notes = [_note(2, 1, "job_failed"), _note(1, 1, "something_else")]
    out = summarise(notes, [], env, NOW)
    assert out["poll_seconds"] == 5
    assert out["book_url"] == "/lab-hub/services/werkhub/book"
    assert [n["id"] for n in out["notifications"]] == [2]
    assert out["booking"] is None and out["warnings"] == []
    assert summarise([], [], {"WERKHUB_LAB_POLL_SECONDS": "x"}, NOW)["poll_seconds"] == 60
