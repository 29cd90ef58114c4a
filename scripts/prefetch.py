"""Fetch what the test suite needs from the registries, so that the suite itself runs with no
network but loopback (``.ci/run``): the Debian root filesystem of the container tier's base
image and the wheelhouse of the curated images. Both are cached under ``.cache/images/`` and
reused while their inputs are unchanged; without root or debootstrap the container tier is
skipped anyway and so is its download."""

from __future__ import annotations

import shutil
import sys

from werkhub.images.catalog import ImageError, cached_wheelhouse, debian_tarball, load_catalog


def main() -> int:
    if not (shutil.which("podman") or shutil.which("docker")):
        print("prefetch: no container engine, the container tier is skipped: nothing to fetch")
        return 0
    try:
        print(f"prefetch: Debian base {debian_tarball()}")
    except ImageError as exc:
        print(f"prefetch: no Debian base ({exc}); the container tier will skip")
    print(f"prefetch: wheelhouse {cached_wheelhouse(load_catalog(), extra_index=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
