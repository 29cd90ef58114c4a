"""Record (``--write``) or check (``--check``) which sources the committed build came from.

The prebuilt JupyterLab extension under ``extensions/werkhub_widgets/labextension/`` is
committed so user servers need no node. ``make labext`` rebuilds it and writes the SHA-256
of its sources next to it; ``tests/unit/test_labext_build.py`` fails when the sources
changed without a rebuild.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "werkhub_widgets" / "labextension" / "werkhub-lab"
STAMP = OUTPUT / "build-source.sha256"
SOURCES = ("package.json", "tsconfig.json", "yarn.lock", ".yarnrc.yml", "src", "style")


def source_files(root: Path = HERE) -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = root / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def source_hash(root: Path = HERE) -> str:
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        STAMP.write_text(source_hash() + "\n")
        print(f"recorded {STAMP.read_text().strip()} in {STAMP}")
        return 0
    if argv[1:] == ["--check"]:
        recorded = STAMP.read_text().strip() if STAMP.exists() else "(none)"
        if recorded != source_hash():
            print("extensions/werkhub_lab changed since the last build: run `make labext`")
            return 1
        print("the committed labextension matches its sources")
        return 0
    print("usage: source_hash.py --write | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
