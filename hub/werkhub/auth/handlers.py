"""The hub's own REST handlers for users and groups, with werkhub's name rules.

JupyterHub routes the authenticator's handlers before its own, so these replace the hub's
``/hub/api/users/NAME``, ``/hub/api/groups`` and ``/hub/api/groups/NAME`` (the admin page
uses the same API):

* a user is never renamed (400 with the reason, nothing changed);
* a group is created only with a name that fits the one name rule (400 with the reason,
  nothing created), as for groups that come from single sign-on or the command line.

Every other request goes to JupyterHub's handler unchanged.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.apihandlers.groups import GroupAPIHandler, GroupListAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from werkhub.auth.names import name_problem

RENAME_REFUSED = (
    "werkhub does not rename users: a user's password, home, jobs, bookings and MLflow "
    "account belong to the name. Create the new user, move the files over, then delete the "
    "old user."
)


def refuse_group_name(name: object) -> None:
    """400 with the reason when ``name`` is no valid group name."""
    problem = name_problem(name, kind="group")
    if problem is not None:
        raise web.HTTPError(400, problem)


class KeepNamesUserAPIHandler(UserAPIHandler):
    """``/hub/api/users/NAME`` with renaming refused: JupyterHub renames only its own
    record, so the password row, the home and what the service holds would stay under the
    old name, and the service would take the rename for a deletion. Every other change
    (admin flag, auth state) goes through unchanged."""

    @needs_scope("admin:users")
    async def patch(self, user_name: str) -> None:
        if self.find_user(user_name) is None:
            raise web.HTTPError(404)
        data = self.get_json_body() or {}
        if isinstance(data, dict) and "name" in data and data["name"] != user_name:
            raise web.HTTPError(400, RENAME_REFUSED)
        await super().patch(user_name)


class SafeGroupListAPIHandler(GroupListAPIHandler):
    """``POST /hub/api/groups`` {"groups": [...]}: every name is checked before any group
    is created, so a list with one bad name creates none."""

    @needs_scope("admin:groups")
    async def post(self) -> None:
        model = self.get_json_body()
        if isinstance(model, dict) and isinstance(model.get("groups"), list):
            for name in model["groups"]:
                refuse_group_name(name)
        await super().post()


class SafeGroupAPIHandler(GroupAPIHandler):
    """``POST /hub/api/groups/NAME``: the name is checked before the group is created."""

    @needs_scope("admin:groups")
    async def post(self, group_name: str) -> None:
        refuse_group_name(group_name)
        await super().post(group_name)


class KeepNames(Authenticator):
    """Registers the handlers above before the hub's own (the authenticator's handlers
    come first in JupyterHub's routing)."""

    def get_handlers(self, app: Any) -> list[tuple[str, type[BaseHandler]]]:
        return [
            (r"/api/users/([^/]+)", KeepNamesUserAPIHandler),
            (r"/api/groups", SafeGroupListAPIHandler),
            (r"/api/groups/([^/]+)", SafeGroupAPIHandler),
            *super().get_handlers(app),
        ]
