"""Tone and style filters for the chained translation benchmark ``tones3``.

Each filter maps an HxWx3 uint8 photo to a filtered HxWx3 uint8 image. In ``tones3`` they are applied
one after another (task k's source is task k-1's target), as the paper's GLD experiment chains styles.
"""
from __future__ import annotations

import numpy as np
from skimage import color, filters, restoration


def _f(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 255


def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def warm(img: np.ndarray) -> np.ndarray:
    """Vintage warm tone: sepia mixing, a lifted black point and an S-shaped contrast curve."""
    x = _f(img)
    sepia = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    s = x @ sepia.T
    s = 0.55 * s + 0.45 * x
    s = 0.5 - 0.5 * np.cos(np.pi * np.clip(s, 0, 1))  # S-curve
    return _u8(0.08 + 0.88 * s)


def cartoon(img: np.ndarray) -> np.ndarray:
    """Cartoon style: total-variation smoothing into flat regions, boosted saturation, dark ink edges."""
    x = _f(img)
    smooth = restoration.denoise_tv_chambolle(x, weight=0.12, channel_axis=-1)
    grey = color.rgb2gray(smooth)[..., None]
    vivid = np.clip(grey + 1.5 * (smooth - grey), 0, 1)
    edges = filters.sobel(grey[..., 0])
    mask = np.clip(edges / 0.15, 0, 1)[..., None]
    return _u8(vivid * (1 - 0.7 * mask))


def sketch(img: np.ndarray) -> np.ndarray:
    """Coloured pencil sketch: a colour-dodge of the grey image over its blurred negative, lightly tinted."""
    x = _f(img)
    grey = color.rgb2gray(x)
    blurred = filters.gaussian(1 - grey, sigma=3)
    dodge = np.clip(grey / np.clip(1 - blurred, 1e-3, None), 0, 1)
    tint = 0.75 * dodge[..., None] + 0.25 * x
    return _u8(tint)


FILTERS = {"warm": warm, "cartoon": cartoon, "sketch": sketch}
