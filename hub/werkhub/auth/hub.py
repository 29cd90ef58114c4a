"""Hub authentication for the FastAPI service: hub API tokens and the hub's OAuth cookie.

Scripts and widgets send ``Authorization: token <hub token>``; browsers go through
the hub's OAuth flow once and then carry an HttpOnly cookie holding their hub token.
The service never keeps passwords of its own.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse
from jupyterhub.services.auth import HubOAuth
from pydantic import BaseModel

from werkhub import http
from werkhub.config.wiring import SPAWNER_DIGEST_VAR, SPAWNER_SERVICE, token_digest
from werkhub.errors import WerkhubError

STATE_COOKIE = "werkhub-oauth-state"


class HubUser(BaseModel):
    """Who is calling, as the hub sees it."""

    name: str
    kind: str = "user"
    admin: bool = False
    groups: list[str] = []


class NeedsLogin(WerkhubError):
    """A browser without a valid cookie: send it through the hub's login."""

    status = 401

    def __init__(self, next_url: str) -> None:
        super().__init__("Log in through the hub first.")
        self.next_url = next_url


class HubAuthenticator:
    """Checks callers against the hub and looks up their admin flag and groups."""

    def __init__(self, detail_ttl: float = 10.0) -> None:
        self.oauth = HubOAuth(cache_max_age=60)
        self.detail_ttl = detail_ttl
        self._details: dict[str, tuple[float, dict[str, Any]]] = {}
        self._client = http.async_client(token=self.oauth.api_token, timeout=10)
        # The hub's spawner calls on every spawn; knowing its token's digest spares each
        # spawn a round trip to the hub (and the hub a token lookup while it spawns).
        self.spawner_digest = os.environ.get(SPAWNER_DIGEST_VAR, "").strip().lower()

    def is_spawner(self, token: str) -> bool:
        """Whether ``token`` is the hub's own spawner token (constant-time compare)."""
        if len(self.spawner_digest) != 64:
            return False
        return hmac.compare_digest(token_digest(token), self.spawner_digest)

    @property
    def cookie_name(self) -> str:
        return self.oauth.cookie_name.removeprefix("__Host-")

    @property
    def prefix(self) -> str:
        return self.oauth.base_url

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def token_from_header(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return None

    async def user_details(self, name: str) -> dict[str, Any] | None:
        """The hub's model of user ``name`` (admin flag, groups, servers), or None."""
        now = time.monotonic()
        cached = self._details.get(name)
        if cached and now - cached[0] < self.detail_ttl:
            return cached[1]
        reply = await self._client.get(f"{self.hub_api}/users/{quote(name, safe='')}")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        model = reply.json()
        self._details[name] = (now, model)
        return model

    @property
    def hub_api(self) -> str:
        return self.oauth.api_url.rstrip("/")

    async def hub_request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request to the hub's REST API (``path`` below /hub/api) with the service's
        token; callers read the status themselves."""
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        return await self._client.request(method, f"{self.hub_api}{path}", **kwargs)

    async def group_members(self, group: str) -> list[str] | None:
        """Names of the hub group's members, or None if there is no such group."""
        reply = await self._client.get(f"{self.hub_api}/groups/{quote(group, safe='')}")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return sorted(reply.json().get("users") or [])

    async def mint_token(self, user: str, note: str, expires_in: int, scopes: list[str]) -> str:
        """A new hub API token of ``user`` (jobs act as their owner with it, e.g. for
        MLflow: include ``access:services!service=mlflow``). Needs the ``tokens`` scope,
        which the werkhub service's role has; the hub refuses scopes the user lacks."""
        reply = await self._client.post(
            f"{self.hub_api}/users/{quote(user, safe='')}/tokens",
            json={"note": note, "expires_in": int(expires_in), "scopes": list(scopes)},
        )
        if reply.status_code != 201:
            try:
                message = reply.json().get("message", reply.text)
            except ValueError:
                message = reply.text
            raise HTTPException(
                reply.status_code if reply.status_code < 500 else 502,
                f"the hub refused a token for {user}: {message}",
            )
        return str(reply.json()["token"])

    async def users_created(self) -> dict[str, str]:
        """Every hub user's name and creation time (ISO 8601), all pages."""
        found: dict[str, str] = {}
        offset = 0
        while True:
            reply = await self._client.get(
                f"{self.hub_api}/users",
                params={"offset": offset, "limit": 200},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            reply.raise_for_status()
            page = reply.json()
            for user in page["items"] if isinstance(page, dict) else page:
                found[user["name"]] = str(user.get("created") or "")
            nxt = page.get("_pagination", {}).get("next") if isinstance(page, dict) else None
            if not nxt:
                return found
            offset = nxt["offset"]

    def forget(self, name: str) -> None:
        """Drop what is cached about ``name`` (a deleted user)."""
        self._details.pop(name, None)

    async def running_users(self) -> set[str]:
        """Names of users whose default server is running and ready."""
        running: set[str] = set()
        offset = 0
        while True:
            reply = await self._client.get(
                f"{self.hub_api}/users",
                params={"state": "ready", "offset": offset, "limit": 200},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            reply.raise_for_status()
            page = reply.json()
            items = page["items"] if isinstance(page, dict) else page
            for user in items:
                server = (user.get("servers") or {}).get("")
                if server and server.get("ready"):
                    running.add(user["name"])
            nxt = page.get("_pagination", {}).get("next") if isinstance(page, dict) else None
            if not nxt:
                return running
            offset = nxt["offset"]

    async def identify(self, request: Request) -> HubUser:
        token = self.token_from_header(request)
        from_cookie = token is None
        if from_cookie:
            token = request.cookies.get(self.cookie_name)
        if not token:
            self._deny(request, 401, "Not logged in: send 'Authorization: token <hub API token>'.")
        if not from_cookie and self.is_spawner(token):
            request.state.token_validated = True
            return HubUser(name=SPAWNER_SERVICE, kind="service")
        model = await self.oauth.user_for_token(token, sync=False)
        if model is None:
            self._deny(request, 401, "The hub does not know this token (expired or revoked?).")
        if not self.oauth.check_scopes(self.oauth.access_scopes, model):
            raise HTTPException(403, "This token may not use the werkhub service.")
        # a hub token from the Authorization header validated: a script, not a browser
        # the CSRF check (werkhub.service.pages.csrf) may skip; cookie callers never set this
        request.state.token_validated = not from_cookie
        if model.get("kind") == "service":
            return HubUser(name=model["name"], kind="service")
        details = await self.user_details(model["name"])
        if details is None:
            raise HTTPException(401, "This user no longer exists.")
        return HubUser(
            name=details["name"],
            admin=bool(details.get("admin")),
            groups=sorted(details.get("groups") or []),
        )

    def _deny(self, request: Request, status: int, message: str) -> None:
        wants_html = "text/html" in request.headers.get("accept", "")
        if request.method == "GET" and wants_html and self.token_from_header(request) is None:
            raise NeedsLogin(
                str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
            )
        raise HTTPException(status, message)

    def login_redirect(self, next_url: str) -> RedirectResponse:
        state = secrets.token_urlsafe(16)
        self.oauth._oauth_states[state] = {"next_url": next_url}
        # HubOAuth.login_url already carries client_id, redirect_uri and response_type
        login_url = self.oauth.login_url
        joiner = "&" if "?" in login_url else "?"
        response = RedirectResponse(
            f"{login_url}{joiner}{urlencode({'state': state})}", status_code=302
        )
        response.set_cookie(
            STATE_COOKIE, state, max_age=600, httponly=True, samesite="lax", path=self.prefix
        )
        return response

    async def finish_login(self, request: Request) -> RedirectResponse:
        code = request.query_params.get("code")
        state = request.query_params.get("state")
        if not code or not state:
            raise HTTPException(400, "The login reply is missing its code or state; log in again.")
        if not secrets.compare_digest(state, request.cookies.get(STATE_COOKIE, "")):
            raise HTTPException(403, "The login state does not match; log in again.")
        next_url = self.oauth.get_next_url(state)
        self.oauth.clear_oauth_state(state)
        if not next_url.startswith(self.prefix):
            next_url = self.prefix
        token = await self.oauth.token_for_code(code, sync=False)
        response = RedirectResponse(next_url, status_code=302)
        response.delete_cookie(STATE_COOKIE, path=self.prefix)
        secure = request.headers.get("x-forwarded-proto", request.url.scheme) == "https"
        response.set_cookie(
            self.cookie_name, token, httponly=True, samesite="lax", secure=secure, path=self.prefix
        )
        return response
