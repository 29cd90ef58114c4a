"""Hub pages of the werkhub service, the template gallery API and the server restart API.

``install_pages(app, prefix, current_user)`` mounts all of it on the service's FastAPI app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install_pages(app: FastAPI, prefix: str, current_user: Any) -> None:
    # imported here: werkhub.service.templates uses werkhub.service.pages.svg (no import cycle)
    from werkhub.service import templates
    from werkhub.service.pages import restart
    from werkhub.service.pages.csrf import install_csrf
    from werkhub.service.pages.views import build_pages_router

    install_csrf(app)
    app.include_router(templates.router, prefix=prefix)
    app.include_router(restart.router, prefix=prefix)
    app.include_router(build_pages_router(prefix, current_user))
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="werkhub-static")
