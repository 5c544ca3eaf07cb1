"""Built-in source photos: real images that ship inside scikit-image and scikit-learn (nothing downloads).

Train and test crops come from different photos. The test photos are not smoother than the train
photos (mean horizontal gradient 9.0 against 6.7 grey levels), so a model that sharpens is not
favoured on the test split.
"""
from __future__ import annotations

import numpy as np

TRAIN_PHOTOS = ("astronaut", "rocket", "motorcycle", "immunohistochemistry", "camera", "brick", "coins", "flower")
TEST_PHOTOS = ("coffee", "chelsea", "china")


def _load(name: str) -> np.ndarray:
    import skimage.data as sk

    if name == "motorcycle":
        img = sk.stereo_motorcycle()[0]
    elif name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    else:
        img = getattr(sk, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def shrink(img: np.ndarray, short_side: int | None) -> np.ndarray:
    """Downscale (antialiased) so the shorter side is ``short_side``; never upscale."""
    h, w = img.shape[:2]
    if short_side is None or min(h, w) <= short_side:
        return img
    from PIL import Image

    scale = short_side / min(h, w)
    return np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.LANCZOS))


def builtin_photos(split: str, short_side: int | None = None) -> list[np.ndarray]:
    """The built-in photos of a split ('train' or 'test'), as HxWx3 uint8 arrays, optionally downscaled so that
    their shorter side is ``short_side`` (crops then show whole objects rather than texture close-ups)."""
    names = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}[split]
    return [shrink(_load(n), short_side) for n in names]


def random_crops(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``size``x``size`` crops, spread evenly over the photos; returns (n, 3, size, size) uint8."""
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        if h < size or w < size:
            raise ValueError(f"photo of {h}x{w} pixels is smaller than the crop size {size}")
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out[i] = img[top : top + size, left : left + size].transpose(2, 0, 1)
    return out


def aligned_crops(sources: list[list[np.ndarray]], n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Crops at the same places in several aligned versions of the same photos (e.g. a photo and its filtered
    versions). ``sources[k][p]`` is version k of photo p; returns one (n, 3, size, size) uint8 array per version."""
    outs = [np.empty((n, 3, size, size), dtype=np.uint8) for _ in sources]
    n_photos = len(sources[0])
    for i in range(n):
        p = i % n_photos
        h, w = sources[0][p].shape[:2]
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        for k, version in enumerate(sources):
            outs[k][i] = version[p][top : top + size, left : left + size].transpose(2, 0, 1)
    return outs
