"""The werkhub service: one FastAPI app under ``/services/werkhub/``, started by the hub."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from werkhub import __version__
from werkhub.hubauth import HubAuthenticator, HubUser, NeedsLogin


async def current_user(request: Request) -> HubUser:
    """FastAPI dependency: the hub-authenticated caller (401/403 or a login redirect)."""
    return await request.app.state.auth.identify(request)


CurrentUser = Annotated[HubUser, Depends(current_user)]


class Health(BaseModel):
    status: str
    version: str


def create_app(prefix: str | None = None) -> FastAPI:
    """Build the app; ``prefix`` defaults to the hub-provided ``JUPYTERHUB_SERVICE_PREFIX``."""
    prefix = (prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/werkhub/")).rstrip(
        "/"
    )
    auth = HubAuthenticator()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await auth.aclose()

    app = FastAPI(
        title="werkhub",
        version=__version__,
        description="GPU booking, jobs, reports and usage for the werkhub workbench.",
        openapi_url=f"{prefix}/api/openapi.json",
        docs_url=None,  # Swagger UI would load assets from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.auth = auth

    @app.exception_handler(NeedsLogin)
    async def _login(request: Request, exc: NeedsLogin) -> Response:
        return auth.login_redirect(exc.next_url)

    api = APIRouter(prefix=f"{prefix}/api", tags=["core"])

    @api.get("/health", response_model=Health, summary="Liveness of the service")
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    @api.get("/me", response_model=HubUser, summary="The caller: name, admin flag and groups")
    async def me(user: CurrentUser) -> HubUser:
        return user

    app.include_router(api)

    @app.get(f"{prefix}/oauth_callback", include_in_schema=False)
    async def oauth_callback(request: Request) -> Response:
        return await auth.finish_login(request)

    @app.get(f"{prefix}/", include_in_schema=False, response_class=HTMLResponse)
    async def home(user: CurrentUser) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>werkhub</title></head><body><main>"
            f"<h1>werkhub</h1><p>Signed in as <strong>{user.name}</strong>.</p>"
            "</main></body></html>"
        )

    @app.get(prefix, include_in_schema=False)
    async def bare() -> RedirectResponse:
        return RedirectResponse(f"{prefix}/")

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"No such werkhub endpoint: {request.url.path}"}, 404)

    return app


def main() -> None:
    import uvicorn

    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    uvicorn.run(
        create_app(),
        host=url.hostname or "127.0.0.1",
        port=url.port or 10101,
        log_level="info",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
