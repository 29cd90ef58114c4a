"""``werkhub orgs list|create|rename|remove|members|add|remove-member``, sign-ups waiting
to join (``signups|approve|refuse``) and policies for members and groups
(``policies|set-policy|drop-policy``): organisations of the running werkhub, through its
service API (the command line is a platform admin)."""

from __future__ import annotations

import argparse
import json
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


def _cmd_signups(args: argparse.Namespace) -> int:
    for signup in _api(args).request("GET", f"/orgs/{args.slug}/signups"):
        print(signup["name"])
    return 0


def _cmd_settle(args: argparse.Namespace) -> int:
    action = "approve" if args.orgs_command == "approve" else "refuse"
    _api(args).request("POST", f"/orgs/{args.slug}/signups/{quote(args.name, safe='')}/{action}")
    print(f"{action}d the sign-up of {args.name} to {args.slug}")
    return 0


def _policy_path(args: argparse.Namespace) -> str:
    return f"/orgs/{args.slug}/policies/{args.kind}s/{quote(args.name, safe='')}"


#: set-policy's options: (flag, policy field, type)
POLICY_OPTIONS = (
    ("--gpu-hours-per-week", "gpu_hours_per_week", float),
    ("--max-booking-hours", "max_booking_hours", float),
    ("--max-advance-days", "max_advance_days", float),
    ("--max-concurrent-gpus", "max_concurrent_gpus", int),
)


def _cmd_policies(args: argparse.Namespace) -> int:
    for row in _api(args).request("GET", f"/orgs/{args.slug}/policies"):
        limits = {k: v for k, v in row["policy"].items() if v is not None and k != "week"}
        print(f"{row['kind']}\t{row['name']}\t{json.dumps(limits, sort_keys=True)}")
    return 0


def _cmd_set_policy(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"week": args.week}
    for _, name, _kind in POLICY_OPTIONS:
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.gpu_types is not None:
        body["allowed_gpu_types"] = [t.strip() for t in args.gpu_types.split(",") if t.strip()]
    _api(args).request("PUT", _policy_path(args), body)
    print(f"policy of {args.kind} {args.name} in {args.slug} set")
    return 0


def _cmd_drop_policy(args: argparse.Namespace) -> int:
    _api(args).request("DELETE", _policy_path(args))
    print(f"policy of {args.kind} {args.name} in {args.slug} dropped")
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
    command("signups", "sign-ups waiting to join an organisation", _cmd_signups, "slug")
    command("approve", "approve a sign-up: a member who may log in", _cmd_settle, "slug", "name")
    command("refuse", "refuse a sign-up: the request is removed", _cmd_settle, "slug", "name")
    command("policies", "booking policies set for members and groups", _cmd_policies, "slug")
    policy = command("set-policy", "set a member's or group's booking policy", _cmd_set_policy)
    for parser in (policy, command("drop-policy", "drop one", _cmd_drop_policy)):
        parser.add_argument("slug")
        parser.add_argument("kind", choices=["user", "group"])
        parser.add_argument("name", help="the member, or the hub group (e.g. acme-lab)")
    for flag, name, kind in POLICY_OPTIONS:
        policy.add_argument(flag, dest=name, type=kind, help="(default: no limit)")
    policy.add_argument("--week", choices=["rolling", "calendar"], default="rolling")
    policy.add_argument("--gpu-types", help="allowed GPU types, comma-separated (default: all)")
