"""FastAPI dependencies for what the service set up once, kept on ``app.state``.

``create_app`` stores the environment it read once (:class:`~werkhub.config.env.ServiceEnv`)
and the URL prefix; the lifespan adds the configuration. Routers are module-level and
declare what they need with these; none of them reads the process environment.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from werkhub.config.env import ServiceEnv
from werkhub.config.paths import StatePaths


async def service_env(request: Request) -> ServiceEnv:
    """The service's environment, read once by ``create_app``."""
    return request.app.state.env


async def state_paths(request: Request) -> StatePaths:
    """The state folder's files (``WERKHUB_STATE``)."""
    return request.app.state.env.state


async def api_base(request: Request) -> str:
    """Where the service's API lives: ``{prefix}/api``."""
    return f"{request.app.state.env.prefix}/api"


Env = Annotated[ServiceEnv, Depends(service_env)]
State = Annotated[StatePaths, Depends(state_paths)]
ApiBase = Annotated[str, Depends(api_base)]
