"""Each party's images: non-IID defect mixes, the owner's mixed test set, files on disk.

The three parties of the template and the defect each of them mostly sees (the issue's
scratches, dents and stains are the generator's scratch, pit and inclusion):

* ``machine-builder``: mostly scratches (tool marks gone wrong),
* ``supplier``: mostly pits (dents from handling),
* ``software-house``: mostly inclusions (stains: the software house inspects coated parts),

all of them with good parts. A party's data folder holds ``surfaces.npz`` (arrays
``images``: float32 (n, size, size) grey values in 0..1, ``labels``: int64 class indices of
:data:`surfaces.CLASSES`), or, where Pillow is installed, an image folder with one
sub-folder per class as ``surfaces.save_image_folder`` writes it.

Command line (any Python with numpy)::

    python -m fedinspect.data prepare --party machine-builder --out DIR [--n 1200] [--seed 0]
    python -m fedinspect.data prepare --all --out ROOT     # ROOT/<party>/surfaces.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fedinspect import surfaces

CLASSES = surfaces.CLASSES
#: party slug -> the defect it mostly sees
PARTIES: dict[str, str] = {
    "machine-builder": "scratch",
    "supplier": "pit",
    "software-house": "inclusion",
}
DATA_FILE = "surfaces.npz"


def party_weights(main_defect: str, skew: float, good_share: float = 0.5) -> tuple[float, ...]:
    """Class weights of a party: ``good_share`` good parts; of the defects, ``skew`` are its
    main defect and the rest split evenly between the other two."""
    if main_defect not in CLASSES[1:]:
        raise ValueError(f"unknown defect {main_defect!r}; expected one of {list(CLASSES[1:])}")
    if not 0 < skew <= 1 or not 0 < good_share < 1:
        raise ValueError("skew must be in (0, 1] and good_share in (0, 1)")
    others = (1 - skew) / (len(CLASSES) - 2)
    defect = [skew if name == main_defect else others for name in CLASSES[1:]]
    return (good_share, *((1 - good_share) * w for w in defect))


def party_seed(party: str, seed: int) -> int:
    return 1000 * seed + 17 + list(PARTIES).index(party)


def make_party(
    party: str, n: int, size: int = 32, seed: int = 0, noise: float = 0.04, skew: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one of the template's parties (the same seed, the same data)."""
    if party not in PARTIES:
        raise ValueError(f"unknown party {party!r}; the template's parties are {list(PARTIES)}")
    weights = party_weights(PARTIES[party], skew)
    return surfaces.make_images(n, size, party_seed(party, seed), noise, weights)


def make_test_set(
    n: int, size: int = 32, seed: int = 0, noise: float = 0.04
) -> tuple[np.ndarray, np.ndarray]:
    """The owner's mixed held-out test set: all four classes balanced, its own seed."""
    return surfaces.make_images(n, size, 1000 * seed + 901, noise)


def make_reference_images(n: int, size: int = 32, seed: int = 0, noise: float = 0.04) -> np.ndarray:
    """Unlabelled images of the owner's that fix the feature scaling (mean and spread)."""
    return surfaces.make_images(n, size, 1000 * seed + 907, noise)[0]


def save_party(folder: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``folder/surfaces.npz`` (the format the ClientApp reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DATA_FILE
    np.savez_compressed(path, images=images.astype(np.float32), labels=labels.astype(np.int64))
    return path


def load_party(folder: str | Path, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A party's images and labels from its data folder (``surfaces.npz`` or an image folder).

    Raises ``ValueError`` with a sentence a person understands when the folder holds neither,
    or when the arrays do not fit (shape, value range, labels)."""
    folder = Path(folder)
    path = folder / DATA_FILE
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data or "labels" not in data:
                raise ValueError(f"{path} must hold the arrays 'images' and 'labels'")
            images = np.asarray(data["images"], np.float32)
            labels = np.asarray(data["labels"], np.int64)
        if images.ndim != 3 or images.shape[1:] != (size, size) or len(images) != len(labels):
            raise ValueError(
                f"{path}: expected images of shape (n, {size}, {size}) and n labels, "
                f"got {images.shape} and {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise ValueError(f"{path}: labels must be class indices 0..{len(CLASSES) - 1}")
        return np.clip(images, 0.0, 1.0), labels
    if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
        return surfaces.load_image_folder(folder, size)  # needs Pillow
    raise ValueError(
        f"no data in {folder}: expected {DATA_FILE} or one image sub-folder per class "
        f"({', '.join(CLASSES)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedinspect.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="write a party's images (surfaces.npz)")
    which = prepare.add_mutually_exclusive_group(required=True)
    which.add_argument("--party", choices=list(PARTIES))
    which.add_argument("--all", action="store_true", help="every party, into OUT/<party>/")
    prepare.add_argument("--out", required=True, type=Path)
    prepare.add_argument("--n", type=int, default=1200, help="images per party")
    prepare.add_argument("--image-size", type=int, default=32)
    prepare.add_argument("--noise", type=float, default=0.04)
    prepare.add_argument("--skew", type=float, default=0.95, help="share of the main defect")
    prepare.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    parties = list(PARTIES) if args.all else [args.party]
    for party in parties:
        folder = args.out / party if args.all else args.out
        images, labels = make_party(
            party, args.n, args.image_size, args.seed, args.noise, args.skew
        )
        path = save_party(folder, images, labels)
        counts = ", ".join(
            f"{c} {k}" for c, k in zip(np.bincount(labels, minlength=4), CLASSES, strict=True)
        )
        print(f"{party}: {len(labels)} images ({counts}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
