"""The ``werkhub`` command line: ``up``, ``config``, ``users``, ``gpus``, ``images``, ``jobs``,
``orgs``, ``federations``."""

from __future__ import annotations

import argparse
import sys

from werkhub.cli import federations as federations_cli
from werkhub.cli import gpus as gpus_cli
from werkhub.cli import images as images_cli
from werkhub.cli import jobs as jobs_cli
from werkhub.cli import orgs as orgs_cli
from werkhub.cli import users as users_cli
from werkhub.cli.common import DEFAULT_STATE, add_common, load
from werkhub.config.load import ConfigError, load_config
from werkhub.config.paths import StatePaths
from werkhub.errors import WerkhubError

__all__ = ["DEFAULT_STATE", "build_parser", "main"]


def cmd_up(args: argparse.Namespace) -> int:
    from werkhub.app.launcher import Launch

    cfg, path = load(args)
    return Launch(cfg, StatePaths.at(args.state), path).run()


def cmd_config_validate(args: argparse.Namespace) -> int:
    load_config(args.file)
    print(f"{args.file}: valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="werkhub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    common = add_common

    up = sub.add_parser("up", help="start the hub, proxy and services in the foreground")
    common(up)
    up.set_defaults(func=cmd_up)

    config = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_command", required=True
    )
    validate = config.add_parser("validate", help="check a werkhub.yaml without starting")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_config_validate)

    users_cli.add_cli(sub)
    gpus_cli.add_cli(sub)
    images_cli.add_cli(sub)
    jobs_cli.add_cli(sub, add_common)
    orgs_cli.add_cli(sub, add_common)
    federations_cli.add_cli(sub, add_common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WerkhubError as exc:  # a refusal with a message for the person at the terminal
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
