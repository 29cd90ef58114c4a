"""Native login: passwords in the werkhub user store, self sign-up with admin approval."""

from __future__ import annotations

from typing import Any

from jupyterhub import orm
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web
from traitlets import Bool, Integer, Unicode

from werkhub.userstore import UserStore, UserStoreError


class WerkhubAuthenticator(Authenticator):
    """Username/password login against :class:`werkhub.userstore.UserStore`."""

    store_path = Unicode(help="SQLite file of the werkhub password store").tag(config=True)
    allow_signup = Bool(True, help="Show a sign-up page; sign-ups wait for approval").tag(
        config=True
    )
    min_password_length = Integer(10, help="Shortest password accepted").tag(config=True)

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
        name = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        if not name or not password:
            return None
        if self.store.verify(name, password):
            return name
        stored = self.store.get(name)
        if stored is not None and not stored.approved:
            raise web.HTTPError(403, "Your sign-up is waiting for approval by an administrator.")
        return None

    def get_handlers(self, app: Any) -> list[tuple[str, type[BaseHandler]]]:
        handlers = super().get_handlers(app)
        if self.allow_signup:
            handlers.append(("/signup", SignUpHandler))
        handlers.append(("/werkhub/signups", ApprovalHandler))
        return handlers


class SignUpHandler(BaseHandler):
    """A new person asks for an account; an admin approves it later."""

    def _render(self, message: str = "", ok: bool = False, name: str = "") -> str:
        return self.render_template(
            "werkhub-signup.html",
            message=message,
            ok=ok,
            signup_name=name,
            min_length=self.authenticator.min_password_length,
        )

    async def get(self) -> None:
        self.finish(await self._render())

    async def post(self) -> None:
        auth: WerkhubAuthenticator = self.authenticator
        name = auth.normalize_username(self.get_body_argument("username", "").strip())
        password = self.get_body_argument("password", "")
        repeat = self.get_body_argument("password_repeat", "")
        if password != repeat:
            self.set_status(400)
            self.finish(await self._render("The two passwords differ.", name=name))
            return
        # a name an admin already created in the hub is pre-approved
        pre_approved = orm.User.find(self.db, name) is not None
        try:
            auth.store.request_signup(name, password, approved=pre_approved)
        except UserStoreError as exc:
            self.set_status(400)
            self.finish(await self._render(str(exc), name=name))
            return
        if pre_approved:
            message = "Your account is ready: log in with your new password."
        else:
            message = "Thank you. An administrator will approve your account; then you can log in."
        self.finish(await self._render(message, ok=True))


class ApprovalHandler(BaseHandler):
    """Admins list pending sign-ups and approve or reject them."""

    @web.authenticated
    @needs_scope("admin:users")
    async def get(self) -> None:
        pending = self.authenticator.store.list(pending_only=True)
        html = await self.render_template("werkhub-signups.html", pending=pending, message="")
        self.finish(html)

    @web.authenticated
    @needs_scope("admin:users")
    async def post(self) -> None:
        store: UserStore = self.authenticator.store
        name = self.get_body_argument("name", "")
        action = self.get_body_argument("action", "")
        try:
            if action == "approve":
                store.approve(name)
                message = f"Approved {name}."
            elif action == "reject":
                message = f"Rejected {name}." if store.remove(name) else f"No sign-up '{name}'."
            else:
                raise UserStoreError("action must be 'approve' or 'reject'")
        except UserStoreError as exc:
            self.set_status(400)
            message = str(exc)
        pending = store.list(pending_only=True)
        html = await self.render_template("werkhub-signups.html", pending=pending, message=message)
        self.finish(html)
