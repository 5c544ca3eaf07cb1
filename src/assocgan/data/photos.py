"""Built-in source photos: real colour photographs shipped with the package (``data/photos/``, credited in
``data/photos/CREDITS.md``), split by photo into train and test (``manifest.tsv``); nothing downloads.

Crops are taken at several scales: a crop covers between 1 and ``MAX_SCALE`` times the crop size of the
photo (log-uniformly) and is resized to the crop size, so that the same photo gives texture close-ups and
whole-object views. The photos are first shrunk so that their shorter side is at most ``SHORT_SIDE`` crop sizes.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

FOLDER = Path(__file__).with_name("photos")
MAX_SCALE = 4.0  # a crop covers at most this many crop sizes of the (shrunk) photo
SHORT_SIDE = 5  # photos are shrunk to a shorter side of at most this many crop sizes


@dataclass(frozen=True)
class PhotoInfo:
    file: str
    split: str
    category: str
    package: str
    source_path: str
    author: str
    licence: str


@functools.cache
def manifest() -> tuple[PhotoInfo, ...]:
    """Every built-in photo with its split, category, source and licence."""
    with open(FOLDER / "manifest.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return tuple(PhotoInfo(**{k: r[k] for k in PhotoInfo.__dataclass_fields__}) for r in rows)


def photo_files(split: str) -> list[Path]:
    """The files of a split ('train' or 'test'), in manifest order."""
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: 'train' or 'test'")
    return [FOLDER / p.file for p in manifest() if p.split == split]


@functools.cache
def photo_sizes(split: str) -> tuple[tuple[int, int], ...]:
    """(height, width) of each built-in photo of a split, read from the files' headers."""
    from PIL import Image

    out = []
    for path in photo_files(split):
        with Image.open(path) as im:
            out.append((im.height, im.width))
    return tuple(out)


def disjoint_crops(sizes, size: int) -> int:
    """How many non-overlapping ``size`` x ``size`` crops photos of these (height, width) hold once shrunk as
    crops are cut (shorter side at most ``SHORT_SIDE`` crop sizes)."""
    total = 0
    for h, w in sizes:
        scale = min(1.0, SHORT_SIDE * size / min(h, w))
        total += int(h * scale) // size * (int(w * scale) // size)
    return total


def shrink(img: np.ndarray, short_side: int | None) -> np.ndarray:
    """Downscale (antialiased) so the shorter side is ``short_side``; never upscale."""
    h, w = img.shape[:2]
    if short_side is None or min(h, w) <= short_side:
        return img
    from PIL import Image

    scale = short_side / min(h, w)
    return np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.LANCZOS))


@functools.lru_cache(maxsize=4)
def _load_split(split: str, short_side: int | None) -> tuple[np.ndarray, ...]:
    from PIL import Image

    out = []
    for path in photo_files(split):
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        img = shrink(img, short_side)
        img.setflags(write=False)
        out.append(img)
    return tuple(out)


def builtin_photos(split: str, short_side: int | None = None) -> list[np.ndarray]:
    """The built-in photos of a split ('train' or 'test'), as read-only HxWx3 uint8 arrays, optionally
    downscaled so that their shorter side is at most ``short_side``."""
    return list(_load_split(split, short_side))


def crop_boxes(shapes: list[tuple[int, int]], n: int, size: int, rng: np.random.Generator, max_scale: float | None = None) -> list[tuple[int, int, int, int]]:
    """``n`` crop boxes (photo, top, left, side), spread evenly over the photos (photo ``i % len``); each box's
    side is ``size`` times a log-uniform scale in [1, max_scale] (default ``MAX_SCALE``), as far as the photo allows."""
    max_scale = MAX_SCALE if max_scale is None else max_scale
    boxes = []
    for i in range(n):
        p = i % len(shapes)
        h, w = shapes[p]
        if min(h, w) < size:
            raise UserError(f"--size {size}: larger than a photo of {h}x{w} pixels, whose crops it takes; give at most {min(h, w) - min(h, w) % 16}")
        top_scale = max(1.0, min(max_scale, min(h, w) / size))
        side = min(min(h, w), int(round(size * np.exp(rng.uniform(0, np.log(top_scale))))))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        boxes.append((p, top, left, side))
    return boxes


def cut(img: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The box of ``img`` resized (antialiased) to ``size`` x ``size``; returns (3, size, size) uint8."""
    from PIL import Image

    _, top, left, side = box
    part = img[top : top + side, left : left + side]
    if side != size:
        part = np.asarray(Image.fromarray(np.ascontiguousarray(part)).resize((size, size), Image.LANCZOS, reducing_gap=None))
    return np.ascontiguousarray(part.transpose(2, 0, 1))


def aligned_crops(sources: list[list[np.ndarray]], n: int, size: int, rng: np.random.Generator, max_scale: float | None = None) -> list[np.ndarray]:
    """Crops of the same boxes in several aligned versions of the same photos (e.g. a photo and its filtered
    versions). ``sources[k][p]`` is version k of photo p; returns one (n, 3, size, size) uint8 array per version."""
    boxes = crop_boxes([im.shape[:2] for im in sources[0]], n, size, rng, max_scale)
    return [np.stack([cut(version[b[0]], b, size) for b in boxes]) if n else np.empty((0, 3, size, size), np.uint8) for version in sources]


def random_crops(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator, max_scale: float | None = None) -> np.ndarray:
    """``n`` multi-scale crops, spread evenly over the photos; returns (n, 3, size, size) uint8."""
    return aligned_crops([photos], n, size, rng, max_scale)[0]
