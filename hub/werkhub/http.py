"""The one HTTP client helper of the hub side: every werkhub caller builds its client here.

What every client gets, so no caller has to remember it:

* timeouts: ``timeout`` seconds for each phase of a call, connecting at most 10 s;
* no proxy from the environment (``trust_env=False``): werkhub talks to its own hub, service
  and MLflow, on loopback or inside the cluster, never through a company's HTTP proxy;
* TLS verification on for ``https://``; a plain ``http://`` base skips loading the CA
  bundle (that cost each spawn about 40 ms);
* the token header JupyterHub and the werkhub service understand (``token <value>``) or a
  bearer token (MLflow), and a ``werkhub/<version>`` User-Agent;
* connection attempts retried ``retries`` times (httpx's transport retries; a request that
  reached the server is never sent twice).

:func:`detail` reads the message a person understands out of an error answer of
JupyterHub (``message``), FastAPI (``detail``) or MLflow (``message``). :class:`JsonApi` is a
small synchronous client for the command line that turns refusals into a chosen error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from werkhub import __version__
from werkhub.errors import Unavailable, Upstream, WerkhubError

USER_AGENT = f"werkhub/{__version__}"
CONNECT_TIMEOUT = 10.0


def headers(token: str | None = None, bearer: str | None = None) -> dict[str, str]:
    """Request headers: the User-Agent and, when given, a hub token or a bearer token."""
    result = {"User-Agent": USER_AGENT}
    if token:
        result["Authorization"] = f"token {token}"
    elif bearer:
        result["Authorization"] = f"Bearer {bearer}"
    return result


def timeouts(timeout: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))


def _options(
    base_url: str,
    token: str | None,
    bearer: str | None,
    timeout: float | httpx.Timeout,
    verify: bool | str | None,
    extra_headers: dict[str, str] | None,
    **rest: Any,
) -> dict[str, Any]:
    if verify is None:
        verify = not base_url.startswith("http://")
    options = {
        "headers": {**headers(token, bearer), **(extra_headers or {})},
        "timeout": timeouts(timeout),
        "verify": verify,
        "trust_env": False,
        **{key: value for key, value in rest.items() if value is not None},
    }
    if base_url:
        options["base_url"] = base_url
    return options


def client(
    base_url: str = "",
    *,
    token: str | None = None,
    bearer: str | None = None,
    timeout: float | httpx.Timeout = 30,
    retries: int = 0,
    verify: bool | str | None = None,
    auth: tuple[str, str] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> httpx.Client:
    """A synchronous client with werkhub's defaults (see the module notes)."""
    transport = httpx.HTTPTransport(retries=retries) if retries else None
    return httpx.Client(
        **_options(
            base_url, token, bearer, timeout, verify, extra_headers, auth=auth, transport=transport
        )
    )


def async_client(
    base_url: str = "",
    *,
    token: str | None = None,
    bearer: str | None = None,
    timeout: float | httpx.Timeout = 30,
    retries: int = 0,
    verify: bool | str | None = None,
    auth: tuple[str, str] | None = None,
    extra_headers: dict[str, str] | None = None,
    limits: httpx.Limits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An asyncio client with werkhub's defaults; ``transport`` for an in-process app."""
    if transport is None and retries:
        transport = httpx.AsyncHTTPTransport(retries=retries)
    return httpx.AsyncClient(
        **_options(
            base_url,
            token,
            bearer,
            timeout,
            verify,
            extra_headers,
            auth=auth,
            limits=limits,
            transport=transport,
        )
    )


def detail(reply: httpx.Response) -> str:
    """The human message of an error answer (JSON ``detail`` or ``message``, else the text)."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text.strip()[:500] or reply.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return reply.text.strip()[:500]


async def answers(url: str, timeout: float = 1.0) -> int | None:
    """The status ``url`` answers a GET with, or None when nothing answers."""
    async with async_client(timeout=timeout) as probe:
        try:
            return (await probe.get(url)).status_code
        except httpx.HTTPError:
            return None


def answers_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers a GET with 200 (synchronous, for the launcher)."""
    with client(timeout=timeout) as probe:
        try:
            return probe.get(url).status_code == 200
        except httpx.HTTPError:
            return False


ErrorFactory = Callable[[str], WerkhubError]


class JsonApi:
    """A synchronous JSON API at ``base`` called with a hub token, for the command line.

    Refusals raise ``error(message)`` with the method, path, status and the server's own
    message; an unreachable server raises ``error`` saying where it was looked for.
    """

    def __init__(
        self,
        base: str,
        token: str,
        error: ErrorFactory = Upstream,
        timeout: float = 30,
        unreachable: ErrorFactory = Unavailable,
    ) -> None:
        self.base = base.rstrip("/")
        self.error = error
        self.unreachable = unreachable
        self._client = client(token=token, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ok404: bool = False,
        raw: bool = False,
    ) -> Any:
        """The decoded answer; None for 404 when ``ok404``; the text when ``raw``."""
        try:
            reply = self._client.request(method, self.base + path, json=body)
        except httpx.HTTPError as exc:
            raise self.unreachable(f"werkhub is not reachable at {self.base}: {exc}") from None
        if ok404 and reply.status_code == 404:
            return None
        if reply.status_code >= 400:
            raise self.error(f"{method} {path}: {reply.status_code} {detail(reply)}")
        if raw:
            return reply.text
        return reply.json() if reply.content else None
