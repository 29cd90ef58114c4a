"""``werkhub gpus discover|list``: the GPU inventory."""

from __future__ import annotations

import argparse
from typing import Any

from werkhub.cli.common import CliError, add_common, load


def cmd_gpus_discover(args: argparse.Namespace) -> int:
    import socket

    import yaml

    from werkhub.gpus.inventory import NvmlUnavailable, discover

    try:
        node = discover(args.node or socket.gethostname().split(".")[0].lower())
    except NvmlUnavailable as exc:
        raise CliError(str(exc)) from None
    print("# paste under gpus: in werkhub.yaml")
    print(yaml.safe_dump({"nodes": [node.model_dump()]}, sort_keys=False), end="")
    return 0


def cmd_gpus_list(args: argparse.Namespace) -> int:
    from werkhub.gpus.inventory import describe

    cfg, _ = load(args)
    info = describe(cfg.gpus)
    note = " (simulated)" if info["simulated"] else ""
    for gpu_type in info["types"]:
        print(
            f"{gpu_type['gpu_type']}\t{gpu_type['units']} unit(s), at most "
            f"{gpu_type['max_per_node']} per node{note}"
        )
    return 0


def add_cli(sub: Any) -> None:
    common = add_common
    gpus = sub.add_parser("gpus", help="GPU inventory").add_subparsers(
        dest="gpus_command", required=True
    )
    discover = gpus.add_parser("discover", help="print this machine's GPUs (NVML) as YAML")
    discover.add_argument("--node", help="node name (default: this host's name)")
    discover.set_defaults(func=cmd_gpus_discover)
    glist = gpus.add_parser("list", help="bookable GPU types of the configured inventory")
    common(glist)
    glist.set_defaults(func=cmd_gpus_list)
