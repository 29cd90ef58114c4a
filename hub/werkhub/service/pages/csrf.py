"""CSRF protection for browser (cookie) requests that change state.

A request authenticated by the hub OAuth cookie must send
``X-Werkhub-Csrf`` with a token derived from that cookie (pages put it in a ``<meta>`` tag).
Another site can make the browser send the cookie but cannot read it, so it cannot
compute the token; cross-site requests (``Sec-Fetch-Site: cross-site``) are refused outright.
Clients whose hub token in the ``Authorization`` header was validated are not affected;
an ``Authorization`` header that did not validate (any scheme, any value) changes nothing:
the cookie request still needs its token. The service authenticates every request that
can change something before this check runs (``werkhub.service.bodies``).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

HEADER = "X-Werkhub-Csrf"
SAFE = {"GET", "HEAD", "OPTIONS"}


def csrf_token(cookie: str) -> str:
    return hmac.new(b"werkhub-csrf-v1", cookie.encode(), hashlib.sha256).hexdigest()


def token_for(request: Request) -> str:
    """The token a page served to this browser embeds ('' when not cookie-authenticated)."""
    cookie = request.cookies.get(request.app.state.auth.cookie_name, "")
    return csrf_token(cookie) if cookie else ""


def token_validated(request: Request) -> bool:
    """Whether the auth layer validated a hub token from this request's ``Authorization``
    header (``request.state.token_validated``); a header alone, valid or not, is not enough."""
    return getattr(request.state, "token_validated", False) is True


def refusal(request: Request) -> str | None:
    """Why this request must be refused, or None."""
    if request.method in SAFE or token_validated(request):
        return None
    if request.headers.get("sec-fetch-site") == "cross-site":
        return "cross-site requests may not change anything here"
    auth = getattr(request.app.state, "auth", None)
    cookie = request.cookies.get(auth.cookie_name, "") if auth else ""
    if not cookie:
        return None  # unauthenticated: the endpoint itself answers 401
    sent = request.headers.get(HEADER, "")
    if not sent or not hmac.compare_digest(sent, csrf_token(cookie)):
        return f"missing or wrong {HEADER} header: reload the page and try again"
    return None


class CsrfGuard:
    """Pure ASGI middleware (no extra task or body wrapping per request, unlike
    ``@app.middleware``): refuses what ``refusal`` names, passes the rest untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = refusal(Request(scope))
            if reason:
                await JSONResponse({"detail": reason}, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_csrf(app: FastAPI) -> None:
    app.add_middleware(CsrfGuard)
