"""The one HTTP client helper of the notebook side (widgets, the server extension).

The notebook side never imports the hub package, so it has its own small twin of
``werkhub.http``: clients with timeouts, no proxy from the environment (the service and the
MLflow gateway are werkhub's own), the hub token or a bearer token, and refusals turned
into :class:`ServiceError` with the message a person understands.
"""

from __future__ import annotations

from typing import Any

import httpx

USER_AGENT = "werkhub-widgets"


class ServiceError(Exception):
    """A request the service refused or could not answer, with a readable message."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        self.status = status
        self.message = message
        #: the parsed JSON answer, when there was one (e.g. ``earliest_free`` of a 409)
        self.body = body
        super().__init__(f"{message} (HTTP {status})" if status else message)


def _headers(token: str | None, bearer: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"token {token}"
    elif bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    return headers


def client(
    base_url: str, *, token: str | None = None, bearer: str | None = None, timeout: float = 15
) -> httpx.Client:
    """A synchronous client for ``base_url`` (the werkhub service or the MLflow gateway)."""
    return httpx.Client(
        base_url=base_url,
        headers=_headers(token, bearer),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        trust_env=False,
    )


def async_client(*, token: str | None = None, timeout: float = 10) -> httpx.AsyncClient:
    """An asyncio client (the server extension runs in Jupyter Server's event loop)."""
    return httpx.AsyncClient(
        headers=_headers(token, None),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        trust_env=False,
    )


def detail(reply: httpx.Response) -> str:
    """The message of an error answer: FastAPI's ``detail`` (validation errors as
    "field: message; ..."), MLflow's ``message``, else the text."""
    parsed = body(reply)
    if parsed is None:
        return reply.text[:200] or reply.reason_phrase
    if isinstance(parsed, dict) and "detail" not in parsed and parsed.get("message"):
        return str(parsed["message"])
    found = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(found, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in found
        )
    return str(found)


def body(reply: httpx.Response) -> Any:
    """The JSON answer, or None when it is not JSON."""
    try:
        return reply.json()
    except ValueError:
        return None


def send(http: httpx.Client, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
    """``method path`` on ``http``; ServiceError naming ``what`` when it is unreachable,
    the status and the server's message when it refuses."""
    try:
        reply = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ServiceError(0, f"{what} cannot be reached: {exc}") from None
    if reply.status_code >= 400:
        raise ServiceError(reply.status_code, detail(reply), body(reply))
    return reply
