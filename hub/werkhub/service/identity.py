"""Who is calling: the FastAPI dependency every router of the service authenticates with.

Module-level, so routers declare ``Depends(current_user)`` (or ``CurrentUser``) without
being handed it by the app that mounts them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from werkhub.auth.hub import HubUser


async def current_user(request: Request) -> HubUser:
    """FastAPI dependency: the hub-authenticated caller (401/403 or a login redirect).

    Requests with a body were already authenticated by the body middleware (before their
    body was read); their caller is kept on ``request.state``."""
    known = getattr(request.state, "werkhub_user", None)
    if isinstance(known, HubUser):
        return known
    return await request.app.state.auth.identify(request)


CurrentUser = Annotated[HubUser, Depends(current_user)]
