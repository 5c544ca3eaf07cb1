"""Style filters for the chained translation benchmark ``tones3``: photo -> pencil sketch -> blueprint -> cartoon.

Each filter maps an HxWx3 uint8 image to a filtered HxWx3 uint8 image. In ``tones3`` they are applied
one after another (task k's source is task k-1's target), as the paper's GLD experiment chains styles.
The order makes each task's *source* domain easy to tell apart from the others' (a photo, dark pencil strokes
on white, white strokes on Prussian blue), so one generator can learn all three mappings; in the order photo ->
cartoon -> sketch -> blueprint a photo and its cartoon are alike, and joint learning ended below doing nothing
on the cartoon task (docs/results.md, "tones3 becomes photo -> sketch -> blueprint -> cartoon"). The tasks conflict, so a generator that has only just learned the newest
one turns old inputs into the wrong style.
"""

from __future__ import annotations

import numpy as np
from skimage import color, filters, restoration


def _f(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 255


def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


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


PRUSSIAN_BLUE = np.array([0.07, 0.20, 0.45])


def blueprint(img: np.ndarray) -> np.ndarray:
    """Blueprint print: the image's dark strokes in white on Prussian blue paper (a negative in blue and white)."""
    grey = color.rgb2gray(_f(img))[..., None]
    ink = np.clip(1 - grey, 0, 1) ** 0.8
    return _u8(PRUSSIAN_BLUE + (1 - PRUSSIAN_BLUE) * ink)


SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def sepia(img: np.ndarray) -> np.ndarray:
    """Sepia toning: the classic brown-tinted monochrome matrix."""
    return _u8(_f(img) @ SEPIA.T)


def posterize(img: np.ndarray) -> np.ndarray:
    """Poster print: a light smoothing, then each channel quantised to four levels."""
    x = filters.gaussian(_f(img), sigma=1, channel_axis=-1)
    return _u8(np.round(x * 3) / 3)


def emboss(img: np.ndarray) -> np.ndarray:
    """Embossed relief: the grey image's diagonal derivative on mid grey, keeping a trace of the colours."""
    x = _f(img)
    grey = color.rgb2gray(x)
    relief = 0.5 + 2.0 * (np.roll(grey, (1, 1), axis=(0, 1)) - np.roll(grey, (-1, -1), axis=(0, 1)))
    return _u8(0.8 * relief[..., None] + 0.2 * x)


FILTERS = {"cartoon": cartoon, "sketch": sketch, "blueprint": blueprint, "sepia": sepia, "posterize": posterize, "emboss": emboss}
