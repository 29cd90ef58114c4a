"""Jupyter Server extension: ``GET {base_url}werkhub/notifications`` for the JupyterLab side.

Loaded in every user server (enabled by ``jpserver_extensions`` in werkhub's Jupyter
config). It asks the werkhub service, with the server's own hub token, for the owner's
unread notifications and active bookings, and answers what the ``werkhub-lab`` front end
needs: the booking this server runs on, the warnings that still hold, and the other unread
notifications. A booking-end warning is current while its booking is active and has not
been extended since (the service re-arms the warning for a new end time); a reclaim
warning (another organisation claims its guaranteed GPUs, so a borrowed booking ends
early) is current while its booking is active and ends at the reclaim time, and it takes
the place of that booking's end warning.

Speaks HTTP only; it never imports the hub side (``werkhub``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from werkhub_widgets.http import async_client

ROUTE = "werkhub/notifications"
DEFAULT_POLL_SECONDS = 60
#: notification kinds passed on to the front end (booking and job events)
KIND_PREFIXES = ("booking", "no_show", "waitlist", "idle", "job", "reclaim")
#: warning kinds, most telling first: a reclaim explains an early end better
WARNING_KINDS = ("reclaim", "booking_ending")


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    stamp = datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _hhmm(local_iso: str) -> str:
    """``2026-03-02T14:05:00+01:00`` -> ``14:05`` (the service's configured time zone)."""
    return local_iso[11:16] if len(local_iso) >= 16 else local_iso


def _last_end(booking: Mapping[str, Any], action: str) -> datetime | None:
    """The end time named by the booking's last audit entry of ``action`` (``warn``: the
    end warned of; ``reclaim``: the end a reclaim set)."""
    ends = [
        _when(entry.get("detail", {}).get("end"))
        for entry in booking.get("audit") or []
        if entry.get("action") == action
    ]
    ends = [e for e in ends if e is not None]
    return ends[-1] if ends else None


def _reclaimer(booking: Mapping[str, Any]) -> str:
    """The organisation named by the booking's last reclaim."""
    cuts = [e for e in booking.get("audit") or [] if e.get("action") == "reclaim"]
    org = cuts[-1].get("detail", {}).get("org") if cuts else None
    return str(org) if org else "another organisation"


def current_warnings(
    notes: Iterable[Mapping[str, Any]], active: Iterable[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """Warnings that still hold, one per active booking whose end lies ahead: its newest
    ``reclaim`` notification when a reclaim set its present end, else its newest
    ``booking_ending`` notification when the last warning was for its present end time
    (not extended since)."""
    bookings = {b["id"]: b for b in active}
    found: dict[int, dict[str, Any]] = {}
    ordered = sorted(
        notes, key=lambda n: WARNING_KINDS.index(n["kind"]) if n.get("kind") in WARNING_KINDS else 9
    )
    for note in ordered:  # reclaims first, each kind newest first
        kind = note.get("kind")
        booking = bookings.get(note.get("booking_id"))
        if kind not in WARNING_KINDS or booking is None or booking["id"] in found:
            continue
        end = _when(booking["end"])
        action = "reclaim" if kind == "reclaim" else "warn"
        if end is None or end <= now or _last_end(booking, action) != end:
            continue
        hhmm = _hhmm(booking.get("end_local", ""))
        prefix, message = "", note["message"]
        if kind == "reclaim":  # short: JupyterLab cuts a notification after 140 characters
            prefix = "reclaim:"
            message = (
                f"Your borrowed GPUs are reclaimed by {_reclaimer(booking)} at {hhmm}; "
                "the server restarts without GPUs, files are kept."
            )
        found[booking["id"]] = {
            "key": f"{prefix}{booking['id']}@{end.isoformat()}",
            "kind": kind,
            "booking_id": booking["id"],
            "notification_id": note["id"],
            "message": message,
            "end": end.isoformat(),
            "end_hhmm": hhmm,
        }
    return list(found.values())


def server_booking(
    active: Iterable[Mapping[str, Any]], booking_id: str | None
) -> dict[str, Any] | None:
    """The active booking this server runs on (``WERKHUB_BOOKING_ID``), else the one
    ending first."""
    candidates = sorted(active, key=lambda b: b["end"])
    chosen = next((b for b in candidates if str(b["id"]) == (booking_id or "")), None)
    chosen = chosen or (candidates[0] if candidates else None)
    if chosen is None:
        return None
    return {
        "id": chosen["id"],
        "gpu_type": chosen["gpu_type"],
        "count": chosen["count"],
        "end": chosen["end"],
        "end_local": chosen.get("end_local", ""),
        "end_hhmm": _hhmm(chosen.get("end_local", "")),
        "state": chosen["state"],
    }


def summarise(
    notes: list[Mapping[str, Any]],
    active: list[Mapping[str, Any]],
    env: Mapping[str, str],
    now: datetime,
) -> dict[str, Any]:
    """The answer of the route, from the service's replies and the server's environment."""
    base = env.get("JUPYTERHUB_BASE_URL", "/") or "/"
    try:
        poll = max(1, int(env.get("WERKHUB_LAB_POLL_SECONDS", DEFAULT_POLL_SECONDS)))
    except ValueError:
        poll = DEFAULT_POLL_SECONDS
    return {
        "poll_seconds": poll,
        "book_url": url_path_join(base, "services/werkhub/book"),
        "booking": server_booking(active, env.get("WERKHUB_BOOKING_ID")),
        "warnings": current_warnings(notes, active, now),
        "notifications": [
            dict(n) for n in notes if str(n.get("kind", "")).startswith(KIND_PREFIXES)
        ],
    }


class NotificationsHandler(APIHandler):
    """The owner's booking state and unread notifications, read with the server's token."""

    async def _service(self, path: str, query: dict[str, str]) -> Any:
        base = os.environ["WERKHUB_SERVICE_URL"].rstrip("/")
        async with async_client(token=os.environ["JUPYTERHUB_API_TOKEN"]) as client:
            reply = await client.get(f"{base}/{path}", params=query)
            reply.raise_for_status()
            return reply.json()

    @web.authenticated
    async def get(self) -> None:
        if not os.environ.get("WERKHUB_SERVICE_URL") or not os.environ.get("JUPYTERHUB_API_TOKEN"):
            raise web.HTTPError(
                503, "Not inside a werkhub server: WERKHUB_SERVICE_URL or the hub token is missing"
            )
        owner = os.environ.get("JUPYTERHUB_USER", "")
        try:
            notes = await self._service("api/notifications", {"unread": "true"})
            # `user` narrows an administrator's answer to their own bookings
            active = await self._service(
                "api/bookings", {"state": "active", "user": owner} if owner else {"state": "active"}
            )
        except httpx.HTTPStatusError as exc:
            raise web.HTTPError(
                502, f"The werkhub service refused the request (HTTP {exc.response.status_code})"
            ) from None
        except httpx.HTTPError as exc:
            raise web.HTTPError(502, f"The werkhub service cannot be reached: {exc}") from None
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(summarise(notes, active, os.environ, datetime.now(UTC))))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "werkhub_widgets.serverext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(".*$", [(route, NotificationsHandler)])
    serverapp.log.info("werkhub: %s enabled", route)
