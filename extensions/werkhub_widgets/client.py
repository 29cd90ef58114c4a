"""HTTP client for the werkhub service, used by widgets inside a user's server.

Inside a server the hub provides ``JUPYTERHUB_API_TOKEN`` (the server's own token, allowed
to use the werkhub service) and werkhub adds ``WERKHUB_SERVICE_URL``; outside, pass both.
"""

from __future__ import annotations

import os
from typing import Any

from werkhub_widgets.http import ServiceError, client, send

__all__ = ["ServiceError", "WerkhubClient"]


SERVICE = "The werkhub service"


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
        self._http = client(self.base_url, token=token, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = send(self._http, method, path.lstrip("/"), SERVICE, **kwargs)
        return reply.json() if reply.content else None

    def raw(self, method: str, path: str, **kwargs: Any) -> bytes:
        """Like :meth:`request`, for answers that are not JSON (archives, images)."""
        return send(self._http, method, path.lstrip("/"), SERVICE, **kwargs).content

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
