"""``booking()``: book GPUs from a notebook.

Shows free GPUs per type for the next days as an hour grid, a form to book (type, count,
start, hours), my bookings with extend / shorten / cancel / release, quota and waitlist.
From a CPU-only server it offers to restart the server onto a booking once it has started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import ipywidgets as w

from werkhub_widgets._ui import (
    CSS,
    Panel,
    button,
    esc,
    heat_colour,
    parse_time,
    short_time,
)
from werkhub_widgets.client import WerkhubClient

HOLDING = ("booked", "active")


def parse_start(text: str | datetime, tz: ZoneInfo) -> datetime | None:
    """None for "now"; a naive "YYYY-MM-DD HH:MM" is read in ``tz``."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=tz)
    value = text.strip()
    if value.lower() in ("", "now"):
        return None
    try:
        when = datetime.fromisoformat(value.replace("T", " "))
    except ValueError:
        raise ValueError(
            f"start: '{value}' is not a time; write 'now' or e.g. 2025-06-03 14:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=tz)


class BookingWidget(Panel):
    def __init__(
        self,
        client: WerkhubClient | None = None,
        days: int = 7,
        server_env: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> None:
        super().__init__(client)
        env = os.environ if server_env is None else server_env
        #: this server runs without a booking: offer to restart onto one
        self.cpu_only = not env.get("WERKHUB_BOOKING_ID")
        self.days = days
        self._now = now
        self.tz = ZoneInfo("Europe/Berlin")
        self.types: list[dict[str, Any]] = []
        self.bookings: list[dict[str, Any]] = []
        self.waiting: list[dict[str, Any]] = []
        self.quota: dict[str, Any] | None = None
        self.availability: dict[str, list[dict[str, Any]]] = {}
        self.restarting: dict[str, Any] | None = None

        self.gpu_type = w.Dropdown(description="GPU type", options=[])
        self.count = w.BoundedIntText(value=1, min=1, max=64, description="How many")
        self.start = w.Text(value="now", description="Start", placeholder="now or 2025-06-03 14:00")
        self.hours = w.BoundedFloatText(
            value=1.0, min=0.25, max=744, step=0.25, description="Hours"
        )
        self.book_button = button("Book", self.book, "Book these GPUs", button_style="primary")
        self.refresh_button = button("Refresh", self.refresh, "Load the latest state")
        self.grid = w.HTML()
        self.quota_html = w.HTML()
        self.bookings_box = w.VBox()
        self.waitlist_box = w.VBox()
        self.restart_box = w.VBox()
        form = w.HBox(
            [self.gpu_type, self.count, self.start, self.hours, self.book_button],
            layout=w.Layout(flex_flow="row wrap"),
        )
        self.root.children = [
            w.HTML(f"{CSS}<h3>GPU booking</h3>"),
            self.message,
            self.quota_html,
            form,
            self.restart_box,
            w.HTML("<b>My bookings</b>"),
            self.bookings_box,
            self.waitlist_box,
            w.HBox([w.HTML("<b>Free GPUs per hour</b>"), self.refresh_button]),
            self.grid,
        ]
        if self.client is not None:
            self.refresh()

    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    # ---- reading ---------------------------------------------------------------------
    def refresh(self) -> None:
        self.act(self._load)
        self.render()

    def _load(self) -> None:
        me = self.api("GET", "api/me")["name"]
        inventory = self.api("GET", "api/gpus")
        self.types = inventory["types"]
        self.bookings = self.api("GET", "api/bookings", params={"user": me, "limit": 200})
        for b in self.bookings:
            self.tz = ZoneInfo(b.get("time_zone") or self.tz.key)
        self.waiting = [
            e
            for e in self.api("GET", "api/waitlist", params={"user": me})
            if e["state"] == "waiting"
        ]
        self.quota = self.api("GET", "api/quota")
        first = self.now().astimezone(self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        self.availability = {}
        for t in self.types:
            answer = self.api(
                "GET",
                "api/availability",
                params={
                    "gpu_type": t["gpu_type"],
                    "start": first.isoformat(),
                    "end": (first + timedelta(days=self.days)).isoformat(),
                    "step": 60,
                },
            )
            self.availability[t["gpu_type"]] = answer["steps"]

    @property
    def current(self) -> list[dict[str, Any]]:
        """My bookings that have not ended, earliest first."""
        return sorted((b for b in self.bookings if b["state"] in HOLDING), key=lambda b: b["start"])

    # ---- rendering -------------------------------------------------------------------
    def render(self) -> None:
        names = [t["gpu_type"] for t in self.types]
        if list(self.gpu_type.options) != names:
            keep = self.gpu_type.value
            self.gpu_type.options = names
            # ipywidgets leaves a fresh dropdown empty: preselect (and keep) a real choice
            self.gpu_type.value = keep if keep in names else (names[0] if names else None)
        self.quota_html.value = self._quota_html()
        self.grid.value = self._grid_html()
        self.bookings_box.children = [self._booking_row(b) for b in self.current] or [
            w.HTML("<i>No current or upcoming bookings.</i>")
        ]
        self.waitlist_box.children = [self._wait_row(e) for e in self.waiting]
        self.restart_box.children = self._restart_offer()

    def _quota_html(self) -> str:
        q = self.quota
        if not q:
            return ""
        if q.get("gpu_hours_per_week") is None:
            text = "No weekly GPU-hour limit."
        else:
            text = (
                f"<b>{q['remaining_gpu_hours']:g}</b> of {q['gpu_hours_per_week']:g} GPU-hours "
                f"left this week ({q['booked_gpu_hours']:g} booked)."
            )
        simulated = any(t.get("simulated") for t in self.types)
        if simulated:
            text += " <span class='wh-tag'>simulated GPUs: no real devices</span>"
        return f"<div class='werkhub-quota'>Quota: {text}</div>"

    def grid_cells(self, gpu_type: str) -> dict[tuple[str, int], int]:
        """(local date, local hour) -> free units."""
        cells: dict[tuple[str, int], int] = {}
        for step in self.availability.get(gpu_type, []):
            local = parse_time(step["start"]).astimezone(self.tz)
            cells.setdefault((local.date().isoformat(), local.hour), int(step["free"]))
        return cells

    def _grid_html(self) -> str:
        now = self.now()
        first = now.astimezone(self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        parts = []
        for t in self.types:
            cells = self.grid_cells(t["gpu_type"])
            total = t["units"]
            rows = []
            for d in range(self.days):
                day = (first + timedelta(days=d, hours=12)).replace(hour=0)
                tds = []
                for hour in range(24):
                    free = cells.get((day.date().isoformat(), hour))
                    past = day.replace(hour=hour) + timedelta(hours=1) <= now
                    if free is None:
                        tds.append("<td style='background:#f4f4f4'></td>")
                    elif past:
                        tds.append(f"<td style='background:#eee;color:#999'>{free}</td>")
                    else:
                        tds.append(
                            f"<td style='background:{heat_colour(free, total)}' "
                            f"title='{day:%a} {hour:02d}:00: {free} of {total} free'>{free}</td>"
                        )
                rows.append(f"<tr><th>{day:%a %d %b}</th>{''.join(tds)}</tr>")
            head = "".join(f"<th>{h:02d}</th>" for h in range(24))
            sim = " (simulated)" if t.get("simulated") else ""
            parts.append(
                f"<div><b>{esc(t['gpu_type'])}</b>: {total} units{sim}"
                f"<table class='wh-table wh-grid' data-type='{esc(t['gpu_type'])}'>"
                f"<thead><tr><th>{esc(self.tz.key)}</th>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table></div>"
            )
        return "".join(parts)

    def _booking_row(self, b: dict[str, Any]) -> Any:
        started = parse_time(b["start"]) <= self.now()
        devices = ", ".join(b.get("devices") or []) or "-"
        sim = " <span class='wh-tag'>simulated</span>" if b.get("simulated") else ""
        if b.get("borrowed"):
            sim += ' <span class="wh-tag" title="may be reclaimed">borrowed</span>'
        text = (
            f"#{b['id']} <b>{b['count']} x {esc(b['gpu_type'])}</b>{sim} "
            f"{esc(short_time(b.get('start_local') or b['start']))} - "
            f"{esc(short_time(b.get('end_local') or b['end']))} "
            f"<span class='wh-tag'>{esc(b['state'])}</span> devices: {esc(devices)}"
            f"{reclaim_note(b)}"
        )
        bid = b["id"]
        buttons = [
            button("+1 h", lambda: self.extend(bid), f"Extend booking {bid} by one hour"),
            button("-1 h", lambda: self.shorten(bid), f"Shorten booking {bid} by one hour"),
        ]
        if started:
            buttons.append(button("Release", lambda: self.release(bid), f"Release {bid} now"))
        else:
            buttons.append(button("Cancel", lambda: self.cancel(bid), f"Cancel booking {bid}"))
        for b_ in buttons:
            b_.layout = w.Layout(width="auto")
        return w.HBox([w.HTML(text), *buttons])

    def _wait_row(self, e: dict[str, Any]) -> Any:
        eid = e["id"]
        text = (
            f"Waiting: {e['count']} x {esc(e['gpu_type'])} for {e['duration_minutes']} min, "
            f"start between {esc(short_time(e['not_before']))} and "
            f"{esc(short_time(e['latest_start']))}"
        )
        return w.HBox([w.HTML(text), button("Leave", lambda: self.leave_waitlist(eid))])

    def _restart_offer(self) -> list[Any]:
        if not self.cpu_only:
            return []
        if self.restarting:
            return [w.HTML(f"<div class='wh-ok'>{esc(self.restarting['message'])}</div>")]
        rows = []
        for b in self.current:
            bid = b["id"]
            start = parse_time(b["start"])
            if start <= self.now():
                rows.append(
                    button(
                        f"Restart my server onto booking #{bid}",
                        lambda bid=bid: self.restart_onto(bid),
                        "Stop this CPU-only server and start it again with the booked GPUs; "
                        "your files stay",
                        button_style="warning",
                        layout=w.Layout(width="auto"),
                    )
                )
            else:
                rows.append(
                    w.HTML(
                        f"This server has no GPUs. Booking #{bid} starts "
                        f"{esc(short_time(b.get('start_local') or b['start']))}: come back then "
                        "to restart your server onto it."
                    )
                )
        return rows[:3]

    # ---- actions ---------------------------------------------------------------------
    def book(
        self,
        gpu_type: str | None = None,
        count: int | None = None,
        start: str | datetime | None = None,
        hours: float | None = None,
    ) -> dict[str, Any] | None:
        def run() -> dict[str, Any]:
            kind = gpu_type or self.gpu_type.value
            if not kind:
                raise ValueError("gpu_type: choose a GPU type")
            n = int(count if count is not None else self.count.value)
            length = float(hours if hours is not None else self.hours.value)
            if length <= 0:
                raise ValueError("hours: must be more than 0")
            when = parse_start(start if start is not None else self.start.value, self.tz)
            minutes = round(length * 60)
            body: dict[str, Any] = {"gpu_type": kind, "count": n}
            if when is None:
                body.update(start="now", duration_minutes=minutes)
            else:
                body.update(
                    start=when.isoformat(), end=(when + timedelta(minutes=minutes)).isoformat()
                )
            return self.api("POST", "api/bookings", json=body)

        result = self.act(run)
        if result is not None:
            self._reload_after(
                f"Booked {result['count']} x {result['gpu_type']} (booking #{result['id']}) "
                f"from {short_time(result.get('start_local'))} to "
                f"{short_time(result.get('end_local'))}."
            )
        return result

    def _change_end(self, booking_id: int, delta_hours: float, verb: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any]:
            current = self.api("GET", f"api/bookings/{booking_id}")
            end = parse_time(current["end"]) + timedelta(hours=delta_hours)
            return self.api("PATCH", f"api/bookings/{booking_id}", json={"end": end.isoformat()})

        result = self.act(run)
        if result is not None:
            self._reload_after(
                f"Booking #{booking_id} {verb}: now until {short_time(result.get('end_local'))}."
            )
        return result

    def extend(self, booking_id: int, hours: float = 1.0) -> dict[str, Any] | None:
        return self._change_end(booking_id, hours, "extended")

    def shorten(self, booking_id: int, hours: float = 1.0) -> dict[str, Any] | None:
        return self._change_end(booking_id, -hours, "shortened")

    def cancel(self, booking_id: int) -> dict[str, Any] | None:
        result = self.act(lambda: self.api("DELETE", f"api/bookings/{booking_id}"))
        if result is not None:
            self._reload_after(f"Booking #{booking_id} cancelled.")
        return result

    def release(self, booking_id: int) -> dict[str, Any] | None:
        result = self.act(lambda: self.api("POST", f"api/bookings/{booking_id}/release"))
        if result is not None:
            self._reload_after(f"Booking #{booking_id} released: its GPUs are free again.")
        return result

    def leave_waitlist(self, entry_id: int) -> dict[str, Any] | None:
        result = self.act(lambda: self.api("DELETE", f"api/waitlist/{entry_id}"))
        if result is not None:
            self._reload_after("You left the waitlist.")
        return result

    def restart_onto(self, booking_id: int) -> dict[str, Any] | None:
        result = self.act(
            lambda: self.api("POST", "api/me/server/restart", json={"booking_id": booking_id})
        )
        if result is not None:
            self.restarting = result
            self.say(result["message"])
            self.render()
        return result

    def _reload_after(self, success: str) -> None:
        """Reload the state after an action; keep the action's message (or a load error)."""
        self.act(self._load)
        if self.error is None:
            self.say(success)
        self.render()


def reclaim_note(b: dict[str, Any]) -> str:
    """The warning under a borrowed booking another organisation reclaimed (empty if none)."""
    cuts = [a for a in b.get("audit") or [] if a.get("action") == "reclaim"]
    if not cuts or b.get("state") not in HOLDING:
        return ""
    org = esc(str(cuts[-1].get("detail", {}).get("org") or "another organisation"))
    at = esc(short_time(b.get("end_local") or b["end"]))
    return (
        f"<div class='wh-error' role='alert' data-reclaim='{b['id']}'>Your borrowed GPUs are "
        f"reclaimed by {org} at {at}; the server restarts without GPUs, files are kept.</div>"
    )


def booking(client: WerkhubClient | None = None, **kwargs: Any) -> BookingWidget:
    """Show the GPU booking widget: ``from werkhub_widgets import booking; booking()``."""
    return BookingWidget(client, **kwargs)
