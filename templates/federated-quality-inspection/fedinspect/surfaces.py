"""Synthetic images of machined steel surfaces with and without defects.

Image formation model (what the notebook explains):

* The surface is a height map ``z(x, y)``: periodic feed marks left by the cutting tool (grooves
  whose spacing is the feed per revolution and whose direction follows the tool path) plus
  random roughness (band-limited noise).
* The camera sees Lambertian shading of that height map under an oblique light, multiplied by
  the local reflectance (albedo), plus a smooth illumination gradient, an exposure gain/offset
  and sensor noise.
* Defects differ in *how* they change the image, which is what a classifier has to learn:
  - ``scratch``: a long, narrow groove in the height map (a thin line of shading),
  - ``pit``: a small round depression in the height map; under oblique light one flank is
    dark and the opposite flank bright,
  - ``inclusion``: foreign material (slag, oxide) that is flush with the surface but has a
    different reflectance: an irregular dark or bright spot without directional shading,
  - ``none``: a good part.

Everything is vectorised over the batch so thousands of images take well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = ("none", "scratch", "pit", "inclusion")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cutoff: float) -> np.ndarray:
    """Gaussian band-limited noise with unit standard deviation, shape (n, size, size)."""
    white = rng.standard_normal((n, size, size))
    freq = np.fft.fftfreq(size)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    filtered = np.fft.ifft2(np.fft.fft2(white) * np.exp(-radius2 / (2 * cutoff**2))).real
    return filtered / filtered.std(axis=(1, 2), keepdims=True)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float64)
    return coords[None, None, :], coords[None, :, None]  # x varies along columns, y along rows


def _scratch_depth(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A straight groove (depth up to 1) along a random segment, width 0.6-1.2 px."""
    x, y = _grid(size)
    cx, cy = rng.uniform(0.3 * size, 0.7 * size, (2, n, 1, 1))
    angle = rng.uniform(0, np.pi, (n, 1, 1))
    half_length = rng.uniform(0.25, 0.45, (n, 1, 1)) * size
    width = rng.uniform(0.6, 1.2, (n, 1, 1))
    ux, uy = np.cos(angle), np.sin(angle)
    along = (x - cx) * ux + (y - cy) * uy
    across = -(x - cx) * uy + (y - cy) * ux
    fade = np.clip(half_length - np.abs(along), 0, 1.5) / 1.5
    return np.exp(-0.5 * (across / width) ** 2) * fade


def _pit_depth(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A round, smooth depression (depth 1 at its centre), radius 1.8-3.5 px."""
    x, y = _grid(size)
    cx, cy = rng.uniform(0.2 * size, 0.8 * size, (2, n, 1, 1))
    radius = rng.uniform(1.8, 3.5, (n, 1, 1))
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (radius / 1.5) ** 2))


def _inclusion_mask(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """An irregular, sharp-edged blob (values 0/1), about 2-4 px across."""
    x, y = _grid(size)
    cx, cy = rng.uniform(0.2 * size, 0.8 * size, (2, n, 1, 1))
    radius = rng.uniform(1.5, 2.8, (n, 1, 1))
    wobble = 0.9 * _smooth_noise(rng, n, size, cutoff=0.12)
    dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / radius
    return (dist + 0.35 * wobble < 1.0).astype(np.float64)


def make_images(
    n: int,
    size: int = 32,
    seed: int = 0,
    noise: float = 0.04,
    class_weights: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` grayscale surface images.

    Returns ``(images, labels)``: float32 images in [0, 1] of shape (n, size, size) and int64
    labels indexing :data:`CLASSES`. ``noise`` is the standard deviation of the sensor noise
    (0.04 is a decent industrial camera; try 0.1 for a hard, grainy one). Classes are drawn with
    ``class_weights`` (balanced by default) and the same ``seed`` always gives the same images.
    """
    rng = np.random.default_rng(seed)
    weights = np.ones(len(CLASSES)) if class_weights is None else np.asarray(class_weights)
    labels = rng.choice(len(CLASSES), size=n, p=weights / weights.sum())
    x, y = _grid(size)

    # Surface height: feed marks (period 3-7 px, direction within +-20 degrees) + roughness.
    period = rng.uniform(3.0, 7.0, (n, 1, 1))
    direction = rng.uniform(-0.35, 0.35, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    marks = np.sin(2 * np.pi * (x * np.cos(direction) + y * np.sin(direction)) / period + phase)
    height = rng.uniform(0.15, 0.35, (n, 1, 1)) * marks
    height = height + 0.25 * _smooth_noise(rng, n, size, cutoff=0.15)

    scratch = labels == CLASSES.index("scratch")
    pit = labels == CLASSES.index("pit")
    inclusion = labels == CLASSES.index("inclusion")
    height[scratch] -= rng.uniform(1.6, 2.4, (scratch.sum(), 1, 1)) * _scratch_depth(
        rng, int(scratch.sum()), size
    )
    height[pit] -= rng.uniform(3.0, 4.5, (pit.sum(), 1, 1)) * _pit_depth(rng, int(pit.sum()), size)

    # Reflectance: uniform steel, except inclusions (darker slag or brighter oxide).
    albedo = np.ones((n, size, size))
    contrast = rng.choice([-1.0, 1.0], (int(inclusion.sum()), 1, 1)) * rng.uniform(
        0.35, 0.55, (int(inclusion.sum()), 1, 1)
    )
    albedo[inclusion] += contrast * _inclusion_mask(rng, int(inclusion.sum()), size)

    # Lambertian shading of the height map under an oblique light (elevation 45 degrees).
    light_azimuth = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    dz_dy, dz_dx = np.gradient(height, axis=(1, 2))
    lx, ly, lz = np.cos(light_azimuth) * 0.707, np.sin(light_azimuth) * 0.707, 0.707
    shading = (-dz_dx * lx - dz_dy * ly + lz) / np.sqrt(dz_dx**2 + dz_dy**2 + 1.0)

    # Illumination gradient, exposure and sensor noise.
    tilt_x, tilt_y = rng.uniform(-0.3, 0.3, (2, n, 1, 1)) / size
    illumination = 1.0 + tilt_x * (x - size / 2) + tilt_y * (y - size / 2)
    gain = rng.uniform(0.55, 0.8, (n, 1, 1))
    offset = rng.uniform(0.05, 0.15, (n, 1, 1))
    image = offset + gain * illumination * albedo * np.clip(shading, 0, None)
    image = image + noise * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), labels.astype(np.int64)


def save_image_folder(images: np.ndarray, labels: np.ndarray, root: str | Path) -> Path:
    """Write images as PNG files into ``root/<class>/<index>.png`` (the layout of your own data)."""
    import matplotlib.image

    root = Path(root)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(folder / f"{index:05d}.png", image, cmap="gray", vmin=0, vmax=1)
    return root


def load_image_folder(root: str | Path, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Load ``root/<class>/*.png`` (one sub-folder per class in :data:`CLASSES`).

    Images are converted to grayscale in [0, 1] and resized to ``size`` x ``size``. Folders
    whose name is not a known class raise ``ValueError`` so a typo does not silently drop data.
    """
    from PIL import Image

    root = Path(root)
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in CLASSES)
    if unknown:
        raise ValueError(f"unknown class folders {unknown} in {root}; expected {list(CLASSES)}")
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = root / name
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as img:
                gray = img.convert("L").resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(gray, dtype=np.float32) / 255.0)
            labels.append(label)
    if not images:
        raise ValueError(f"no images found under {root}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
