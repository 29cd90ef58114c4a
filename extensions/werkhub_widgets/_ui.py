"""Shared pieces of the werkhub widgets: the message area, error handling, small HTML tables.

Widgets are plain classes holding ipywidgets; every action goes through :meth:`Panel.act`,
which turns service errors (and anything unexpected) into a readable message in the widget
instead of a traceback.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import ipywidgets as w

from werkhub_widgets.client import ServiceError, WerkhubClient

T = TypeVar("T")

CSS = """<style>
.wh-table{border-collapse:collapse;font-size:13px;margin:4px 0}
.wh-table th,.wh-table td{border:1px solid #d0d7de;padding:2px 6px;text-align:left}
.wh-table thead th{background:#f6f8fa}
.wh-grid td{width:22px;text-align:center;font-size:11px;padding:1px}
.wh-ok{background:#dff3e4;border:1px solid #3b8f5a;padding:4px 8px;border-radius:4px}
.wh-error{background:#fbe3e4;border:1px solid #b03a48;color:#8a1c24;padding:4px 8px}
.wh-card{border:1px solid #d0d7de;border-radius:8px;padding:6px;background:#f6f8fa}
.wh-tag{display:inline-block;padding:0 6px;border-radius:9px;background:#e6eef6;font-size:11px}
</style>"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "wh-table") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def parse_time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def short_time(value: str | datetime | None) -> str:
    """'Mon 03 Jun 14:00' in the time zone the service answered in."""
    if not value:
        return ""
    return parse_time(value).strftime("%a %d %b %H:%M")


def heat_colour(free: int, total: int) -> str:
    if total <= 0:
        return "#ddd"
    share = max(0.0, min(1.0, free / total))
    return f"hsl({round(120 * share)},65%,{78 if share else 72}%)"


class Panel:
    """Base of the widgets: a client, a message area and a root box shown in the notebook."""

    def __init__(self, client: WerkhubClient | None = None) -> None:
        self.message = w.HTML(value="", layout=w.Layout(min_height="0px"))
        self.message.add_class("werkhub-message")
        self.root = w.VBox()
        self.error: str | None = None
        #: the message shown, as plain text
        self.text = ""
        try:
            self.client: WerkhubClient | None = client or WerkhubClient()
        except ServiceError as exc:
            self.client = None
            self.fail(exc.message)

    # ---- messages --------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.error = None
        self.text = text
        self.message.value = f"{CSS}<div class='wh-ok' role='status'>{esc(text)}</div>"

    def fail(self, text: str) -> None:
        self.error = self.text = text
        self.message.value = f"{CSS}<div class='wh-error' role='alert'>{esc(text)}</div>"

    def clear(self) -> None:
        self.error = None
        self.text = ""
        self.message.value = ""

    def act(self, action: Callable[[], T], success: str | None = None) -> T | None:
        """Run ``action``; show ``success`` or the error; never raise into the notebook."""
        if self.client is None:
            self.fail(self.error or "Not connected to the werkhub service.")
            return None
        self.error = None
        try:
            result = action()
        except ServiceError as exc:
            self.fail(explain(exc))
            return None
        except ValueError as exc:  # input the widget checked itself
            self.fail(str(exc))
            return None
        except Exception as exc:  # a bug must not turn into a traceback for the user
            self.fail(f"Something went wrong: {type(exc).__name__}: {exc}")
            return None
        if success:
            self.say(success)
        return result

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.client is not None
        return self.client.request(method, path, **kwargs)

    # ---- display ---------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.root._repr_mimebundle_(**kwargs)


def explain(exc: ServiceError) -> str:
    prefix = {
        0: "",
        401: "Not logged in: ",
        403: "Not allowed: ",
        404: "Not found: ",
        409: "Conflict: ",
        422: "Please check the input: ",
    }.get(exc.status, f"The service answered {exc.status}: ")
    text = prefix + exc.message.rstrip()
    if text[-1:] not in ".!?":
        text += "."
    body = exc.body if isinstance(exc.body, dict) else {}
    earliest = body.get("earliest_free")
    if isinstance(earliest, dict) and earliest.get("start"):
        text += f" The earliest free slot of that length starts {short_time(earliest['start'])}."
    return text


def button(description: str, handler: Callable[[], Any], tooltip: str = "", **style: Any) -> Any:
    b = w.Button(description=description, tooltip=tooltip or description, **style)
    b.on_click(lambda _b: handler())
    return b
