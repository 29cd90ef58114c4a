"""HTTP client for the werkhub service, used by widgets inside a user's server.

Inside a server the hub provides ``JUPYTERHUB_API_TOKEN`` (the server's own token, allowed
to use the werkhub service) and werkhub adds ``WERKHUB_SERVICE_URL``; outside, pass both.
"""

from __future__ import annotations

import os
from typing import Any

import httpx


class ServiceError(Exception):
    """A request the service refused or could not answer, with a readable message."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        self.status = status
        self.message = message
        #: the parsed JSON answer, when there was one (e.g. ``earliest_free`` of a 409)
        self.body = body
        super().__init__(f"{message} (HTTP {status})" if status else message)


def _detail(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200] or reply.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation errors: "field: message; ..."
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return str(detail)


def _body(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None


class WerkhubClient:
    def __init__(
        self, base_url: str | None = None, token: str | None = None, timeout: float = 15
    ) -> None:
        base_url = base_url or os.environ.get("WERKHUB_SERVICE_URL", "")
        token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not base_url or not token:
            raise ServiceError(
                0, "Not inside a werkhub server: WERKHUB_SERVICE_URL or the hub token is missing."
            )
        self.base_url = base_url.rstrip("/") + "/"
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"token {token}"}, timeout=timeout
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self._http.request(method, path.lstrip("/"), **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(0, f"The werkhub service cannot be reached: {exc}") from None
        if reply.status_code >= 400:
            raise ServiceError(reply.status_code, _detail(reply), _body(reply))
        return reply.json() if reply.content else None

    def raw(self, method: str, path: str, **kwargs: Any) -> bytes:
        """Like :meth:`request`, for answers that are not JSON (archives, images)."""
        try:
            reply = self._http.request(method, path.lstrip("/"), **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(0, f"The werkhub service cannot be reached: {exc}") from None
        if reply.status_code >= 400:
            raise ServiceError(reply.status_code, _detail(reply))
        return reply.content

    def me(self) -> dict[str, Any]:
        return self.request("GET", "api/me")

    def health(self) -> dict[str, Any]:
        return self.request("GET", "api/health")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WerkhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
