"""``werkhub users add|list|approve|invite|invitations|revoke-invite``: accounts of the
running hub and the native login's user store."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from werkhub.auth.names import url_part
from werkhub.auth.userstore import (
    INVITATION_DAYS,
    UserStore,
    check_username,
    generate_password,
)
from werkhub.cli.common import CliError, add_common, load
from werkhub.config.paths import StatePaths
from werkhub.config.schema import WerkhubConfig
from werkhub.http import JsonApi


class HubClient:
    """Talks to the running hub's REST API with the token ``werkhub up`` left for the CLI."""

    def __init__(self, cfg: WerkhubConfig, state: StatePaths) -> None:
        from werkhub.app.launcher import is_locked

        if not is_locked(state) or not state.cli_token.exists():
            raise CliError(
                f"werkhub is not running on {state.root}: start it with `werkhub up` "
                "(users are created through the running hub)"
            )
        self.api = JsonApi(
            f"{cfg.hub.public_url}{cfg.hub.base_url}hub/api",
            state.cli_token.read_text().strip(),
            error=lambda message: CliError(f"hub refused {message}"),
            unreachable=CliError,
        )

    def request(self, method: str, path: str, body: Any = None, ok404: bool = False) -> Any:
        return self.api.request(method, path, body, ok404=ok404)


def _ensure_hub_user(hub: HubClient, name: str, admin: bool, groups: list[str]) -> None:
    """Create ``name`` in the hub if missing, make it admin if asked, add it to groups."""
    existing = hub.request("GET", f"/users/{url_part(name)}", ok404=True)
    if existing is None:
        hub.request("POST", f"/users/{url_part(name)}", {"admin": admin})
    elif admin and not existing.get("admin"):
        hub.request("PATCH", f"/users/{url_part(name)}", {"admin": True})
    for group in groups:
        if hub.request("GET", f"/groups/{url_part(group)}", ok404=True) is None:
            hub.request("POST", f"/groups/{url_part(group)}")
        hub.request("POST", f"/groups/{url_part(group)}/users", {"users": [name]})


def _check_names(name: str, groups: list[str]) -> str:
    for group in groups:
        check_username(group)
    return check_username(name)


def cmd_users_add(args: argparse.Namespace) -> int:
    cfg, _ = load(args)
    state = StatePaths.at(args.state)
    name = _check_names(args.name, args.group)
    store = UserStore(state.users_db, cfg.auth.native.min_password_length)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        store.check_password_strength(name, password)
    else:
        password = generate_password()
    _ensure_hub_user(HubClient(cfg, state), name, args.admin, args.group)
    if cfg.auth.kind == "native":
        store.set_password(name, password, approved=True)
    role = "administrator" if args.admin else "user"
    groups = f" in group(s) {', '.join(args.group)}" if args.group else ""
    print(f"Created {role} '{name}'{groups}.")
    if cfg.auth.kind == "native" and not args.password_stdin:
        print(f"Password (shown once): {password}")
    return 0


def cmd_users_invite(args: argparse.Namespace) -> int:
    """Create the account in the hub (if needed) and a one-time invitation to claim it."""
    cfg, _ = load(args)
    if cfg.auth.kind != "native":
        raise CliError("invitations are for the native login; with single sign-on users log in")
    state = StatePaths.at(args.state)
    name = _check_names(args.name, args.group)
    store = UserStore(state.users_db, cfg.auth.native.min_password_length)
    stored = store.get(name)
    if stored is not None and stored.approved:
        raise CliError(f"'{name}' already has a password and can log in; no invitation needed")
    _ensure_hub_user(HubClient(cfg, state), name, args.admin, args.group)
    code = store.invite(name, "werkhub-cli", args.days)
    link = f"{cfg.hub.public_url}{cfg.hub.base_url}hub/signup?invite={code}"
    print(f"Invitation for '{name}' (shown once; valid {args.days:g} days, works once):")
    print(link)
    return 0


def cmd_users_invitations(args: argparse.Namespace) -> int:
    import time

    from werkhub.auth import userstore

    cfg, _ = load(args)
    store = UserStore(StatePaths.at(args.state).users_db, cfg.auth.native.min_password_length)
    at = userstore.now()  # the user store's clock seam, as for the expiry itself
    for inv in store.invitations():
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(inv.expires))
        print(f"{inv.name}\t{inv.state(at)}\texpires {expires}\tby {inv.created_by}")
    return 0


def cmd_users_revoke(args: argparse.Namespace) -> int:
    cfg, _ = load(args)
    store = UserStore(StatePaths.at(args.state).users_db, cfg.auth.native.min_password_length)
    count = store.revoke_invitations(args.name)
    print(f"Revoked {count} open invitation(s) of '{args.name}'.")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    cfg, _ = load(args)
    store = UserStore(StatePaths.at(args.state).users_db, cfg.auth.native.min_password_length)
    for user in store.list():
        print(f"{user.name}\t{'approved' if user.approved else 'waiting for approval'}")
    return 0


def cmd_users_approve(args: argparse.Namespace) -> int:
    cfg, _ = load(args)
    store = UserStore(StatePaths.at(args.state).users_db, cfg.auth.native.min_password_length)
    store.approve(args.name)
    print(f"Approved '{args.name}': they can log in now.")
    return 0


def add_cli(sub: Any) -> None:
    common = add_common
    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="create a user in the running hub")
    common(add)
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    add.add_argument("--group", action="append", default=[], help="add to group (repeatable)")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of generating one",
    )
    add.set_defaults(func=cmd_users_add)
    lst = users.add_parser("list", help="list native-login users and pending sign-ups")
    common(lst)
    lst.set_defaults(func=cmd_users_list)
    approve = users.add_parser("approve", help="approve a pending sign-up")
    common(approve)
    approve.add_argument("name")
    approve.set_defaults(func=cmd_users_approve)
    invite = users.add_parser(
        "invite", help="create a user in the running hub with a one-time invitation link"
    )
    common(invite)
    invite.add_argument("name")
    invite.add_argument("--admin", action="store_true", help="make the user an administrator")
    invite.add_argument("--group", action="append", default=[], help="add to group (repeatable)")
    invite.add_argument(
        "--days",
        type=float,
        default=INVITATION_DAYS,
        help=f"how long the link is valid (default {INVITATION_DAYS:g} days)",
    )
    invite.set_defaults(func=cmd_users_invite)
    invitations = users.add_parser("invitations", help="list invitations and their state")
    common(invitations)
    invitations.set_defaults(func=cmd_users_invitations)
    revoke = users.add_parser("revoke-invite", help="revoke the open invitations of a user")
    common(revoke)
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_users_revoke)
