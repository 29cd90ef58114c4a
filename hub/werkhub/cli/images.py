"""``werkhub images list|build|wheelhouse|debian-base``: the command line of
:mod:`werkhub.images.catalog`. ``werkhub.cli.main`` registers it with :func:`add_cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from werkhub.images.catalog import (
    DEBIAN_TAG,
    DEFAULT_PREFIX,
    DEFAULT_TAG,
    Flavour,
    build_images,
    create_wheelhouse,
    debian_base,
    load_catalog,
)
from werkhub.images.engine import ContainerError, detect_engine


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``werkhub images list|build|wheelhouse|debian-base``."""
    images = subparsers.add_parser("images", help="curated user images: list, build, wheelhouse")
    sub = images.add_subparsers(dest="images_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--catalog", type=Path, help="catalog.yaml (default: images/catalog.yaml)")

    def engine_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--engine", choices=["docker", "podman"], help="default: whichever works")

    lst = sub.add_parser("list", help="the curated images, parents first")
    common(lst)
    lst.set_defaults(func=_guard(_cmd_list))

    build = sub.add_parser("build", help="build images (all when none named), parents first")
    common(build)
    engine_option(build)
    build.add_argument("names", nargs="*", metavar="NAME", help="images; ancestors come along")
    build.add_argument("--offline", type=Path, metavar="WHEELHOUSE", help="install from it only")
    build.add_argument("--base-image", help="BASE_IMAGE of root images (default: the catalog's)")
    build.add_argument(
        "--debootstrap",
        action="store_true",
        help=f"root images FROM {DEBIAN_TAG}, made with debootstrap when missing (no registry)",
    )
    build.add_argument("--cuda", action="store_true", help="CUDA builds of GPU-capable images")
    build.add_argument("--prefix", default=DEFAULT_PREFIX, help="image name prefix (werkhub/)")
    build.add_argument("--tag", default=DEFAULT_TAG, help="image tag (latest)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.set_defaults(func=_guard(_cmd_build))

    wheelhouse = sub.add_parser("wheelhouse", help="download the wheels for offline builds")
    common(wheelhouse)
    wheelhouse.add_argument("dest", type=Path, metavar="WHEELHOUSE")
    wheelhouse.add_argument("names", nargs="*", metavar="NAME", help="images (default: all)")
    wheelhouse.add_argument("--cuda", action="store_true", help="CUDA wheels (e.g. torch)")
    wheelhouse.add_argument(
        "--no-extra-index",
        action="store_true",
        help="use only pip's configured index and find-links, not the catalog's extra indexes",
    )
    wheelhouse.set_defaults(func=_guard(_cmd_wheelhouse))

    debian = sub.add_parser("debian-base", help=f"make {DEBIAN_TAG} with debootstrap (root)")
    engine_option(debian)
    debian.add_argument("--mirror", help="Debian mirror (default: debootstrap's)")
    debian.set_defaults(func=_guard(_cmd_debian_base))


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ContainerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_list(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    for spec in catalog.build_order():
        parent = f"FROM {spec.parent}" if spec.parent else f"FROM {spec.base_image}"
        gpu = "GPU-capable" if spec.gpu else "CPU"
        print(f"{spec.name}\t{parent}\t{gpu}\t{spec.description}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    engine = detect_engine(args.engine)
    base_image = args.base_image
    if args.debootstrap:
        base_image = debian_base(engine)
    built = build_images(
        args.names,
        engine,
        catalog=catalog,
        wheelhouse=args.offline.resolve() if args.offline else None,
        base_image=base_image,
        flavour="cuda" if args.cuda else "cpu",
        prefix=args.prefix,
        tag=args.tag,
        no_cache=args.no_cache,
        quiet=False,
        log=_log,
    )
    for name, tag in built.items():
        print(f"{name}\t{tag}")
    return 0


def _cmd_wheelhouse(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    flavour: Flavour = "cuda" if args.cuda else "cpu"
    dest = create_wheelhouse(
        args.dest.resolve(),
        catalog,
        args.names,
        flavour=flavour,
        extra_index=not args.no_extra_index,
    )
    print(f"{dest}: {len(list(dest.glob('*.whl')))} wheels")
    return 0


def _cmd_debian_base(args: argparse.Namespace) -> int:
    engine = detect_engine(args.engine)
    print(debian_base(engine, mirror=args.mirror))
    return 0
