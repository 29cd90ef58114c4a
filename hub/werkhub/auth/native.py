"""Native login: passwords in the werkhub user store, self sign-up with admin approval,
one-time invitations for accounts an admin created, and what deleting a user removes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
from jupyterhub import orm
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Bool, Float, Integer, Unicode, default

from werkhub import http
from werkhub.auth.handlers import KeepNames
from werkhub.auth.names import is_valid, name_problem, url_part
from werkhub.auth.userstore import INVITATION_DAYS, UserStore, UserStoreError

log = logging.getLogger("werkhub.auth.native")


class SafeNames:
    """One name rule for every way a name enters the hub (login, admin page, API).

    Names are never rewritten: no lowercasing or Unicode folding that could land one
    person on another's account. ``username_map`` still applies (an admin's explicit map).
    """

    username_map: dict[str, str]

    def normalize_username(self, username: str) -> str:
        return self.username_map.get(username, username)

    def validate_username(self, username: str) -> bool:
        if not is_valid(username):
            log.warning("refused user name %r: %s", username, name_problem(username))
            return False
        return True


class DeletionNotice(Authenticator):
    """Tells the werkhub service that a user was deleted, so it pauses and deletes their
    jobs, cancels their bookings and disables their MLflow account at once. If the
    service cannot be reached, its own reconciliation against the hub's user list
    catches the deletion later."""

    werkhub_url = Unicode(help="Base URL of the werkhub service (…/services/werkhub)").tag(
        config=True
    )
    werkhub_token = Unicode(help="Token the hub uses towards the werkhub service").tag(config=True)

    @default("werkhub_url")
    def _default_url(self) -> str:
        return str(self.config.Spawner.get("werkhub_url", ""))

    @default("werkhub_token")
    def _default_token(self) -> str:
        return str(self.config.Spawner.get("werkhub_token", ""))

    async def notify_service(self, name: str) -> dict[str, Any] | None:
        if not self.werkhub_url or not self.werkhub_token:
            log.warning("user %s deleted; the werkhub service will notice at its next check", name)
            return None
        url = f"{self.werkhub_url.rstrip('/')}/api/admin/users/{url_part(name)}"
        try:
            async with http.async_client(token=self.werkhub_token, timeout=60) as client:
                reply = await client.delete(url)
                reply.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning(
                "user %s deleted; the werkhub service did not answer (%s): it removes their "
                "jobs and bookings at its next check",
                name,
                exc,
            )
            return None
        return reply.json() if reply.content else {}


class WerkhubAuthenticator(SafeNames, KeepNames, DeletionNotice):
    """Username/password login against :class:`werkhub.auth.userstore.UserStore`."""

    store_path = Unicode(help="SQLite file of the werkhub password store").tag(config=True)
    allow_signup = Bool(True, help="Show a sign-up page; sign-ups wait for approval").tag(
        config=True
    )
    min_password_length = Integer(10, help="Shortest password accepted").tag(config=True)
    invitation_days = Float(INVITATION_DAYS, help="How long an invitation is valid (days)").tag(
        config=True
    )
    orgs_file = Unicode(
        "", help="JSON list of the organisations' slugs (kept by the werkhub service)"
    ).tag(config=True)

    def org_slugs(self) -> list[str]:
        """Organisations a sign-up may ask to join (none when the file is missing)."""
        if not self.orgs_file:
            return []
        try:
            found = json.loads(Path(self.orgs_file).read_text())
        except (OSError, ValueError):
            return []
        return [str(s) for s in found] if isinstance(found, list) else []

    _store: UserStore | None = None

    @property
    def store(self) -> UserStore:
        if self._store is None:
            self._store = UserStore(self.store_path, self.min_password_length)
        return self._store

    def check_allow_config(self) -> None:
        """Access is decided by approval in the store, so there is nothing to warn about."""

    def check_allowed(self, username: str, authentication: Any = None) -> bool:
        user = self.store.get(username)
        return bool(user and user.approved) or super().check_allowed(username, authentication)

    async def authenticate(self, handler: web.RequestHandler, data: dict[str, str]) -> str | None:
        # the login form forgives capitals (names in the store are all lowercase)
        name = data.get("username", "").strip().lower()
        password = data.get("password", "")
        if not name or not password or not is_valid(name):
            return None
        if self.store.verify(name, password):
            return name
        stored = self.store.get(name)
        if stored is not None and not stored.approved:
            raise web.HTTPError(403, "Your sign-up is waiting for approval by an administrator.")
        return None

    async def delete_user(self, user: Any) -> None:
        """The hub deletes ``user``: no password, no invitation survives; then the service."""
        super().delete_user(user)
        self.store.forget(user.name)
        await self.notify_service(user.name)

    def get_handlers(self, app: Any) -> list[tuple[str, type[BaseHandler]]]:
        # the sign-up page also claims invitations, so it exists even without self sign-up
        return [
            *super().get_handlers(app),
            ("/signup", SignUpHandler),
            ("/werkhub/signups", ApprovalHandler),
        ]


class SignUpHandler(BaseHandler):
    """A new person asks for an account (an admin approves it later), or someone claims
    the account an admin created for them with a one-time invitation."""

    async def _render(
        self,
        message: str = "",
        ok: bool = False,
        name: str = "",
        invite: str = "",
        org: str = "",
    ) -> str:
        return await self.render_template(
            "werkhub-signup.html",
            message=message,
            ok=ok,
            signup_name=name,
            invite=invite,
            self_signup=self.authenticator.allow_signup,
            min_length=self.authenticator.min_password_length,
            with_orgs=bool(self.authenticator.org_slugs()),
            signup_org=org,
        )

    async def _refuse(
        self, status: int, message: str, name: str = "", invite: str = "", org: str = ""
    ) -> None:
        self.set_status(status)
        self.finish(await self._render(message, name=name, invite=invite, org=org))

    async def get(self) -> None:
        invite = self.get_query_argument("invite", "").strip()
        name = ""
        if invite:
            try:
                name = self.authenticator.store.invitation_for(invite).name
            except UserStoreError as exc:
                await self._refuse(400, str(exc))
                return
        elif not self.authenticator.allow_signup:
            await self._refuse(403, SIGNUP_OFF)
            return
        org = self.get_query_argument("org", "").strip().lower()[:20]
        self.finish(await self._render(name=name, invite=invite, org=org))

    async def post(self) -> None:
        auth: WerkhubAuthenticator = self.authenticator
        name = self.get_body_argument("username", "").strip()
        invite = self.get_body_argument("invite", "").strip()
        org = self.get_body_argument("organisation", "").strip().lower()
        password = self.get_body_argument("password", "")
        if password != self.get_body_argument("password_repeat", ""):
            await self._refuse(400, "The two passwords differ.", name, invite, org)
            return
        try:
            if invite:
                auth.store.claim(invite, name, password)
                message = "Your account is ready: log in with your new password."
            else:
                self._check_self_signup(name)
                if org and org not in auth.org_slugs():
                    raise UserStoreError(
                        f"There is no organisation '{org}' here: ask its administrators for "
                        "its short name, or leave the field empty."
                    )
                auth.store.request_signup(name, password, org=org or None)
                who = f"An administrator of '{org}'" if org else "An administrator"
                message = f"Thank you. {who} will approve your account; then you can log in."
        except UserStoreError as exc:
            await self._refuse(400, str(exc), name, invite, org)
            return
        except web.HTTPError as exc:
            await self._refuse(exc.status_code, exc.log_message or "", name, org=org)
            return
        self.finish(await self._render(message, ok=True))

    def _check_self_signup(self, name: str) -> None:
        if not self.authenticator.allow_signup:
            raise web.HTTPError(403, SIGNUP_OFF)
        problem = name_problem(name)
        if problem is not None:
            raise UserStoreError(problem)
        if orm.User.find(self.db, name) is not None:
            raise UserStoreError(
                f"The name '{name}' belongs to an existing account. If an administrator "
                "created it for you, open the invitation link they gave you; otherwise "
                "choose another name."
            )


SIGNUP_OFF = "Self sign-up is turned off here: ask an administrator for an invitation."


class ApprovalHandler(BaseHandler):
    """Admins approve or reject pending sign-ups and invite or un-invite the accounts
    they created in the hub (users without a password)."""

    async def _page(self, message: str = "", link: str = "", link_name: str = "") -> None:
        store: UserStore = self.authenticator.store
        with_password = {u.name for u in store.list() if u.approved}
        invited = {
            i.name: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(i.expires))
            for i in store.invitations(active_only=True)
        }
        waiting = sorted(u.name for u in self.db.query(orm.User) if u.name not in with_password)
        html = await self.render_template(
            "werkhub-signups.html",
            pending=store.list(pending_only=True),
            waiting=[(n, invited.get(n)) for n in waiting],
            message=message,
            link=link,
            link_name=link_name,
            days=self.authenticator.invitation_days,
        )
        self.finish(html)

    @web.authenticated
    @needs_scope("admin:users")
    async def get(self) -> None:
        await self._page()

    @web.authenticated
    @needs_scope("admin:users")
    async def post(self) -> None:
        store: UserStore = self.authenticator.store
        name = self.get_body_argument("name", "")
        action = self.get_body_argument("action", "")
        link = ""
        try:
            if action == "approve":
                asked = store.org_signups().get(name)
                if asked is not None:  # approved there, they also become its member
                    raise UserStoreError(
                        f"{name} asks to join organisation '{asked}': approve them on its "
                        f"page (/services/werkhub/orgs/{asked}), so they become its member."
                    )
                store.approve(name)
                message = f"Approved {name}."
            elif action == "reject":
                message = f"Rejected {name}." if store.remove(name) else f"No sign-up '{name}'."
            elif action == "invite":
                if orm.User.find(self.db, name) is None:
                    raise UserStoreError(f"There is no user '{name}' in the hub: create it first.")
                code = store.invite(
                    name, self.current_user.name, self.authenticator.invitation_days
                )
                link = self.invitation_link(code)
                message = f"Invitation for {name} created: give them the link below."
            elif action == "revoke":
                count = store.revoke_invitations(name)
                message = f"Revoked {count} invitation(s) of {name}."
            else:
                raise UserStoreError("action must be 'approve', 'reject', 'invite' or 'revoke'")
        except UserStoreError as exc:
            self.set_status(400)
            message = str(exc)
        await self._page(message, link, name if link else "")

    def invitation_link(self, code: str) -> str:
        path = url_path_join(self.hub.base_url, "signup")
        return f"{self.request.protocol}://{self.request.host}{path}?invite={code}"
