"""Errors to HTTP answers, in one place: every handler the service installs.

* any :class:`~werkhub.errors.WerkhubError` a router lets propagate answers its ``status``
  with ``{"detail": message}`` (``field`` where known); messages that are not ``public``
  (they name server paths or settings) are logged and the caller reads a generic one;
* a refusal of the booking rules (:class:`~werkhub.booking.ledger.LedgerError`) adds what
  it knows (the conflicting interval, the quota left) to that body;
* request validation errors answer 422 with one readable line and FastAPI's error list;
* a browser without a session is redirected through the hub's login;
* unknown paths answer 404 naming the path.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from werkhub.auth.hub import NeedsLogin
from werkhub.booking.ledger import LedgerError
from werkhub.errors import WerkhubError, answer

log = logging.getLogger("werkhub.service")


def error_response(exc: WerkhubError) -> JSONResponse:
    """The JSON answer of ``exc`` (see :func:`werkhub.errors.answer`)."""
    status, body = answer(exc)
    if not exc.public:
        log.error("%s answered %s: %s", type(exc).__name__, status, exc)
    return JSONResponse(body, status_code=status)


def ledger_response(exc: LedgerError) -> JSONResponse:
    """A booking refusal with its details (times as ISO 8601)."""
    body: dict[str, Any] = {"detail": exc.message}
    for key, value in exc.detail.items():
        if isinstance(value, dict):
            value = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()}
        body[key] = value.isoformat() if isinstance(value, datetime) else value
    return JSONResponse(body, status_code=exc.status)


def validation_message(exc: RequestValidationError) -> str:
    """One line per invalid field: ``start: Input should be a valid datetime; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NeedsLogin)
    async def _login(request: Request, exc: NeedsLogin) -> Response:
        return request.app.state.auth.login_redirect(exc.next_url)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"detail": validation_message(exc), "errors": jsonable_errors(exc)}
        return JSONResponse(body, 422)

    @app.exception_handler(LedgerError)
    async def _ledger(request: Request, exc: LedgerError) -> JSONResponse:
        return ledger_response(exc)

    @app.exception_handler(WerkhubError)
    async def _werkhub(request: Request, exc: WerkhubError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        detail = getattr(exc, "detail", None)
        if detail and detail != "Not Found":
            return JSONResponse({"detail": detail}, 404)
        return JSONResponse({"detail": f"No such werkhub endpoint: {request.url.path}"}, 404)
