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
    section, stock = cfg.gpus, None
    if cfg.slurm.enabled:  # the Slurm cluster's GPU nodes, as the service books them
        from werkhub.slurm.setup import read_inventory

        stock = read_inventory(cfg.slurm)
        section = stock.section()
    info = describe(section)
    note = " (simulated)" if info["simulated"] else ""
    for gpu_type in info["types"]:
        print(
            f"{gpu_type['gpu_type']}\t{gpu_type['units']} unit(s), at most "
            f"{gpu_type['max_per_node']} per node{note}"
        )
    if stock is not None:
        print(f"# Slurm partition {stock.partition}")
        for node in stock.nodes:
            state = stock.status[node.name]
            why = f" ({state.reason})" if state.reason else ""
            usable = "" if state.usable else ", runs no jobs"
            print(f"{node.name}\t{len(node.devices)} GPU(s)\t{state.state}{why}{usable}")
    return 0


def add_cli(sub: Any) -> None:
    common = add_common
    gpus = sub.add_parser("gpus", help="GPU inventory").add_subparsers(
        dest="gpus_command", required=True
    )
    discover = gpus.add_parser("discover", help="print this machine's GPUs (NVML) as YAML")
    discover.add_argument("--node", help="node name (default: this host's name)")
    discover.set_defaults(func=cmd_gpus_discover)
    glist = gpus.add_parser(
        "list", help="bookable GPU types of the inventory (the Slurm cluster's with slurm.enabled)"
    )
    common(glist)
    glist.set_defaults(func=cmd_gpus_list)
