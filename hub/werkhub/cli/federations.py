"""``werkhub federations list|show``: federations of the running werkhub through its
service API (as a platform admin by default, or as the holder of ``--token``)."""

from __future__ import annotations

import argparse
from typing import Any

from werkhub.cli.jobs import ServiceClient


def _api(args: argparse.Namespace) -> Any:
    return ServiceClient(args).api


def _cmd_list(args: argparse.Namespace) -> int:
    for fed in _api(args).request("GET", "/federations"):
        accepted = sum(1 for p in fed["parties"] if p["state"] == "accepted")
        print(
            f"{fed['id']}\t{fed['name']}\t{fed['owner_org']}\t{fed['state']}\t"
            f"{accepted}/{len(fed['parties'])} parties"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    api = _api(args)
    fed = api.request("GET", f"/federations/{args.id}")
    secagg = "on" if fed["secure_aggregation"] else "off"
    print(f"federation {fed['id']} {fed['name']} ({fed['state']})")
    print(f"owner {fed['owner']} of {fed['owner_org']}; app {fed['app']}")
    print(
        f"{fed['strategy']}, {fed['rounds']} rounds, at least {fed['min_parties']} parties, "
        f"SecAgg+ {secagg}"
    )
    for party in fed["parties"]:
        node = f", node {party['node']}" if party.get("node") else ""
        print(f"  {party['org']}\t{party['state']}\t{party['gpus']} GPU(s){node}")
    for run in api.request("GET", f"/federations/{args.id}/runs"):
        print(
            f"run {run['id']}\t{run['status']}\t{len(run['rounds'])}/{run['planned_rounds']} "
            f"rounds\t{run['message']}"
        )
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    feds = subparsers.add_parser("federations", help="federations of the running werkhub")
    sub = feds.add_subparsers(dest="federations_command", required=True)
    for name, text, func in (
        ("list", "federations: id, name, owner organisation, state, parties", _cmd_list),
        ("show", "one federation: its settings, parties and runs", _cmd_show),
    ):
        parser = sub.add_parser(name, help=text)
        common(parser)
        parser.add_argument("--token", help="a hub token (default: $WERKHUB_TOKEN or admin)")
        if name == "show":
            parser.add_argument("id", type=int)
        parser.set_defaults(func=func)
