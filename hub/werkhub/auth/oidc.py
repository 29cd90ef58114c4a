"""Single sign-on (OpenID Connect) with werkhub's name rule.

oauthenticator lowercases names by default, so ``Alice`` and ``alice`` at the identity
provider would share one werkhub account; a name such as ``alice?x`` or ``\u0430lice``
(Cyrillic) would reach hub API URLs. Here a name the provider sends must already fit
:mod:`werkhub.auth.names`; anything else is refused with a message that says why. Groups
whose names do not fit are left out (logged), never renamed onto another group.
"""

from __future__ import annotations

from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from tornado import web

from werkhub.auth.handlers import KeepNames
from werkhub.auth.names import is_valid, name_problem
from werkhub.auth.native import DeletionNotice, SafeNames, log


class WerkhubOIDCAuthenticator(SafeNames, KeepNames, DeletionNotice, GenericOAuthenticator):
    """GenericOAuthenticator (Keycloak by default) that never maps one name onto another."""

    def user_info_to_username(self, user_info: dict[str, Any]) -> str:
        name = super().user_info_to_username(user_info)
        problem = name_problem(name)
        if problem is not None:
            raise web.HTTPError(
                403,
                f"Single sign-on sent the user name {name!a}, which werkhub cannot use: "
                f"{problem}. Ask your identity provider's administrator to give you a "
                "valid user name.",
            )
        return str(name)

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        groups = await super().get_user_groups(auth_state)
        kept = {g for g in groups if is_valid(g)}
        for group in sorted(set(groups) - kept, key=str):
            log.warning(
                "left out group %r from single sign-on: %s", group, name_problem(group, "group")
            )
        return kept

    async def delete_user(self, user: Any) -> None:
        super().delete_user(user)
        await self.notify_service(user.name)
