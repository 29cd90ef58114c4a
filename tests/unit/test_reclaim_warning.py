"""The JupyterLab side of a reclaim: the single-user server extension answers a reclaimed
borrowed booking's warning (its own kind and key, taking the place of the booking's end
warning) while the booking runs and ends at the reclaim time; the holder is told by whom,
when, and what happens to the server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from werkhub.booking.guarantees import reclaim_message
from werkhub.booking.ledger import Slot
from werkhub_widgets.serverext import current_warnings, summarise

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 2, 13, 50, tzinfo=UTC)
END = NOW + timedelta(minutes=15)


def _booking(end: datetime, audit: list[tuple[str, datetime]]) -> dict:
    return {
        "id": 4,
        "gpu_type": "H100",
        "count": 2,
        "state": "active",
        "end": end.isoformat(),
        "end_local": end.astimezone(ZoneInfo("Europe/Berlin")).isoformat(),
        "audit": [
            {
                "at": NOW.isoformat(),
                "actor": "werkhub",
                "action": a,
                "detail": {"end": e.isoformat(), "org": "acme"},
            }
            for a, e in audit
        ],
    }


def _note(note_id: int, kind: str) -> dict:
    return {"id": note_id, "kind": kind, "message": f"{kind} {note_id}", "booking_id": 4}


def test_a_reclaim_is_its_own_warning_and_replaces_the_end_warning() -> None:
    booking = _booking(END, [("reclaim", END), ("warn", END)])
    # newest first: the end warning came after the reclaim, the reclaim still wins
    found = current_warnings([_note(9, "booking_ending"), _note(5, "reclaim")], [booking], NOW)
    assert [(w["kind"], w["notification_id"]) for w in found] == [("reclaim", 5)]
    assert found[0]["key"] == f"reclaim:4@{END.isoformat()}" and found[0]["end_hhmm"] == "15:05"
    # JupyterLab cuts a notification after 140 characters: the warning says it all before
    assert found[0]["message"] == (
        "Your borrowed GPUs are reclaimed by acme at 15:05; "
        "the server restarts without GPUs, files are kept."
    )
    assert len(found[0]["message"]) <= 140
    listed = summarise([_note(5, "reclaim")], [booking], {}, NOW)["notifications"]
    assert [n["kind"] for n in listed] == ["reclaim"]


def test_no_reclaim_warning_once_it_no_longer_holds() -> None:
    notes = [_note(5, "reclaim")]
    assert current_warnings(notes, [_booking(END, [("reclaim", END)])], END) == []  # ended
    later = END + timedelta(hours=1)  # the end is not the one the reclaim set
    assert current_warnings(notes, [_booking(later, [("reclaim", END)])], NOW) == []
    assert current_warnings(notes, [], NOW) == []  # no longer active


def test_the_message_says_by_whom_when_and_what_happens() -> None:
    slot = Slot(
        id=4,
        user="bo",
        gpu_type="H100",
        count=2,
        start=NOW,
        end=END + timedelta(hours=1),
        devices=("n/0", "n/1"),
        state="active",
    )
    berlin = ZoneInfo("Europe/Berlin")
    text = reclaim_message(slot, "acme", END, NOW, berlin)
    assert "reclaimed by organisation 'acme' at 15:05 CET (in 15 min)" in text
    assert "the server then restarts without GPUs, files are kept" in text
    assert "cancelled" in reclaim_message(slot, "acme", None, NOW, berlin)
