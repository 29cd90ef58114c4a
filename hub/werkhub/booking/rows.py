"""Conversions between database rows and ledger values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from werkhub.booking.ledger import Slot, State, WaitEntry

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_min(moment: datetime) -> int:
    return int((moment - EPOCH).total_seconds() // 60)


def from_min(minutes: int) -> datetime:
    return EPOCH + timedelta(minutes=minutes)


def from_ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def slot(row: Mapping[str, Any], devices: tuple[str, ...]) -> Slot:
    return Slot(
        id=row["id"],
        user=row["user"],
        gpu_type=row["gpu_type"],
        count=row["count"],
        start=from_min(row["start_min"]),
        end=from_min(row["end_min"]),
        devices=devices,
        state=State(row["state"]),
    )


def wait_entry(row: Mapping[str, Any]) -> WaitEntry:
    return WaitEntry(
        id=row["id"],
        user=row["user"],
        gpu_type=row["gpu_type"],
        count=row["count"],
        duration=timedelta(minutes=row["duration_min"]),
        not_before=from_min(row["not_before_min"]),
        latest_start=from_min(row["latest_start_min"]),
    )
