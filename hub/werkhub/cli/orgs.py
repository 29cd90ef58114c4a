"""``werkhub orgs list|create|rename|remove|members|add|remove-member``: organisations of
the running werkhub, through its service API (the command line is a platform admin)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from werkhub.cli.jobs import ServiceClient


def _api(args: argparse.Namespace) -> Any:
    return ServiceClient(args).api


def _cmd_list(args: argparse.Namespace) -> int:
    for org in _api(args).request("GET", "/orgs"):
        print(f"{org['slug']}\t{org['members']}\t{org['name']}")
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    org = _api(args).request("POST", "/orgs", {"slug": args.slug, "name": args.name})
    print(f"created organisation {org['slug']} ({org['name']})")
    return 0


def _cmd_rename(args: argparse.Namespace) -> int:
    _api(args).request("PATCH", f"/orgs/{args.slug}", {"name": args.name})
    print(f"renamed {args.slug} to {args.name}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    _api(args).request("DELETE", f"/orgs/{args.slug}")
    print(f"removed organisation {args.slug}")
    return 0


def _cmd_members(args: argparse.Namespace) -> int:
    for member in _api(args).request("GET", f"/orgs/{args.slug}/members"):
        print(f"{member['user']}\t{'admin' if member['admin'] else 'member'}")
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    path = f"/orgs/{args.slug}/members/{quote(args.user, safe='')}"
    _api(args).request("PUT", path, {"admin": args.admin})
    print(f"{args.user} is {'an admin' if args.admin else 'a member'} of {args.slug}")
    return 0


def _cmd_drop(args: argparse.Namespace) -> int:
    _api(args).request("DELETE", f"/orgs/{args.slug}/members/{quote(args.user, safe='')}")
    print(f"{args.user} left {args.slug}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    orgs = subparsers.add_parser("orgs", help="organisations of the running werkhub")
    sub = orgs.add_subparsers(dest="orgs_command", required=True)

    def command(name: str, text: str, func: Any, *positional: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=text)
        common(parser)
        parser.add_argument("--token", help="a hub token (default: $WERKHUB_TOKEN or admin)")
        for arg in positional:
            parser.add_argument(arg)
        parser.set_defaults(func=func)
        return parser

    command("list", "organisations: slug, members, name", _cmd_list)
    command("create", "create an organisation", _cmd_create, "slug", "name")
    command("rename", "give an organisation a new display name", _cmd_rename, "slug", "name")
    command("remove", "remove an organisation (its members stay users)", _cmd_remove, "slug")
    command("members", "an organisation's members and admins", _cmd_members, "slug")
    add = command("add", "add a user to an organisation", _cmd_add, "slug", "user")
    add.add_argument("--admin", action="store_true", help="as an organisation admin")
    command("remove-member", "take a user out of an organisation", _cmd_drop, "slug", "user")
