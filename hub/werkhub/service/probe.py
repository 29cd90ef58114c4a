"""The floor of the booking benchmark: ``POST /api/probe``.

The least a write request to this service can cost: the same proxy, the same hub-token
check and middleware, the same write transaction of the same database (``Store.write``:
the writer queue, ``BEGIN IMMEDIATE`` on SQLite or the advisory lock on PostgreSQL, one
commit), and one insert. ``bench/booking.py`` reports the ledger's create and availability
latencies as ratios to it. Off unless ``services.werkhub.probe`` is true (then 404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import insert

from werkhub.booking import ledger
from werkhub.booking.manager import BookingManager
from werkhub.booking.tables import ledger_probes
from werkhub.service.identity import CurrentUser

router = APIRouter(prefix="/api", tags=["benchmark"])


def _insert(manager: BookingManager, user: str) -> int:
    with manager.write() as conn:
        values = {"user": user, "at": ledger.now_ts()}
        return conn.execute(insert(ledger_probes).values(**values)).inserted_primary_key[0]


@router.post("/probe", status_code=201, summary="Benchmark floor: one insert (when enabled)")
async def probe(request: Request, user: CurrentUser) -> dict[str, Any]:
    if not request.app.state.config.services.werkhub.probe:
        raise HTTPException(404, "Not Found")
    row_id = await run_in_threadpool(_insert, request.app.state.bookings, user.name)
    return {"id": row_id}
