"""Hub pages of the werkhub service, the template gallery API and the server restart API.

``install_pages(app, prefix)`` mounts all of it on the service's FastAPI app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install_pages(app: FastAPI, prefix: str) -> None:
    # imported here: werkhub.service.templates uses werkhub.service.pages.svg (no import cycle)
    from werkhub.service import templates
    from werkhub.service.pages import endpoint_views, restart, views
    from werkhub.service.pages.csrf import install_csrf

    install_csrf(app)
    app.include_router(templates.router, prefix=prefix)
    app.include_router(restart.router, prefix=prefix)
    app.include_router(views.router, prefix=prefix)
    app.include_router(endpoint_views.router, prefix=prefix)
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="werkhub-static")
