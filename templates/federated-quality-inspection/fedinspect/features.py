"""Image features for the federated classifier, in plain numpy (the Flower environment has
no torch, scipy or scikit-learn).

A defect is a small, local change on a textured background (feed marks, roughness, an
illumination gradient). The features describe the strongest local anomaly of each image and
its surroundings, in ways that do not depend on where it is or how the part lies:

* the high-pass residual ``r`` (image minus a blurred copy, scaled by its robust spread):
  its most negative and most positive values and the energy of ``r`` in small windows,
  as quantiles (how strong is the strongest spot, how many strong pixels are there);
* the gradient magnitude's upper quantiles (edges: scratches and pits have steep flanks);
* extremes of differences of Gaussians of the log image at three scales (blob detectors);
* the shape of the blob around the strongest spot: its size, its elongation (second
  moments: a scratch is long and thin, a pit or an inclusion round) and its polarity
  (``|sum r| / sum |r|``: an inclusion is one-signed, a pit a dark/bright pair).
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 48


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a batch (n, h, w) with periodic borders, through the FFT."""
    size = images.shape[-1]
    freq = np.fft.fftfreq(size)
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(images) * kernel).real


def _box(images: np.ndarray, width: int) -> np.ndarray:
    """Mean over width x width windows (same size, edge padding)."""
    pad = width // 2
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    total = np.cumsum(np.cumsum(padded, axis=1), axis=2)
    total = np.pad(total, ((0, 0), (1, 0), (1, 0)))
    _, h, w = images.shape
    window = (
        total[:, width:, width:]
        - total[:, :-width, width:]
        - total[:, width:, :-width]
        + total[:, :-width, :-width]
    )
    return window[:, :h, :w] / width**2


def _blob_shape(residual: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Size, elongation and polarity of the region around each image's strongest spot."""
    n, h, w = residual.shape
    flat = energy.reshape(n, -1)
    peak = flat.argmax(1)
    py, px = np.divmod(peak, w)
    yy, xx = np.mgrid[0:h, 0:w]
    near = (np.abs(yy[None] - py[:, None, None]) <= 6) & (np.abs(xx[None] - px[:, None, None]) <= 6)
    strong = near & (energy >= 0.35 * flat.max(1)[:, None, None])
    weight = strong * energy
    mass = weight.sum((1, 2)) + 1e-9
    my = (weight * yy).sum((1, 2)) / mass
    mx = (weight * xx).sum((1, 2)) / mass
    dy, dx = yy[None] - my[:, None, None], xx[None] - mx[:, None, None]
    syy = (weight * dy**2).sum((1, 2)) / mass
    sxx = (weight * dx**2).sum((1, 2)) / mass
    sxy = (weight * dx * dy).sum((1, 2)) / mass
    spread = np.sqrt((sxx - syy) ** 2 + 4 * sxy**2)
    major, minor = (sxx + syy + spread) / 2, np.maximum((sxx + syy - spread) / 2, 1e-6)
    r_in = residual * near
    polarity = np.abs(r_in.sum((1, 2))) / (np.abs(r_in).sum((1, 2)) + 1e-9)
    size = strong.sum((1, 2)).astype(np.float64)
    return np.stack([np.log1p(size), np.log(major / minor), np.log1p(major), polarity], axis=1)


def _dog_quantiles(x: np.ndarray) -> np.ndarray:
    """Extremes of differences of Gaussians of the log image (blob detectors at three scales),
    in units of their own robust spread. In the log image the reflectance of an inclusion
    adds to the shading instead of multiplying it, so it stands out as a one-signed spot."""
    log_image = np.log(np.clip(x, 0.02, None))
    columns = []
    for inner, outer in ((0.8, 3.0), (1.2, 4.0), (1.8, 6.0)):
        dog = (_blur(log_image, inner) - _blur(log_image, outer)).reshape(len(x), -1)
        centre = np.median(dog, 1, keepdims=True)
        spread = np.median(np.abs(dog - centre), 1, keepdims=True) + 1e-6
        columns.append(np.quantile(dog / spread, [0.0, 0.002, 0.01, 0.99, 0.998, 1.0], axis=1).T)
    return np.concatenate(columns, 1)


def image_features(images: np.ndarray) -> np.ndarray:
    """Features (n, N_FEATURES) of grey images (n, size, size) in [0, 1]."""
    x = np.asarray(images, dtype=np.float64)
    residual = x - _blur(x, 2.0)
    flat = residual.reshape(len(x), -1)
    mad = np.median(np.abs(flat - np.median(flat, 1, keepdims=True)), 1) + 1e-6
    residual = residual / mad[:, None, None]
    r = residual.reshape(len(x), -1)
    low = np.quantile(r, [0.0, 0.002, 0.01, 0.03], axis=1).T
    high = np.quantile(r, [1.0, 0.998, 0.99, 0.97], axis=1).T
    energy3 = _box(residual**2, 3)
    energy5 = _box(residual**2, 5)
    e3 = np.log1p(np.quantile(energy3.reshape(len(x), -1), [1.0, 0.995, 0.98, 0.9], axis=1).T)
    e5 = np.log1p(np.quantile(energy5.reshape(len(x), -1), [1.0, 0.99, 0.95, 0.8], axis=1).T)
    smooth = _blur(x, 0.8)
    gy, gx = np.gradient(smooth, axis=(1, 2))
    grad = np.sqrt(gx**2 + gy**2).reshape(len(x), -1) / (mad[:, None] + 1e-3)
    g = np.log1p(np.quantile(grad, [1.0, 0.99, 0.95, 0.8, 0.5], axis=1).T)
    mean_sign = _box(residual, 3).reshape(len(x), -1)
    signed = np.quantile(mean_sign, [0.0, 0.01, 0.99, 1.0], axis=1).T
    shape = _blob_shape(residual, energy3)
    blobs = _dog_quantiles(x)
    return np.concatenate([low, high, e3, e5, g, signed, shape, np.log(mad)[:, None], blobs], 1)
