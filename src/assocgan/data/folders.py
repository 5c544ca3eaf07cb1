"""A user's own data.

Two layouts of paired tasks under ``ROOT/<task>/{train,test}/``:

* ``A/`` and ``B/`` folders holding images of the same names (A = source, B = target);
* pix2pix's aligned format: each image holds A and B side by side (A on the left).

And a folder of clean images, from which a degradation recipe builds a restoration benchmark.
Every image is brought to ``size`` x ``size``: its shorter side resized to ``size``, then centre-cropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8; a clear error naming the file if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size``; returns (3, size, size) uint8."""
    from PIL import Image

    h, w = img.shape[:2]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
        top, left = (nh - size) // 2, (nw - size) // 2
        img = img[top : top + size, left : left + size]
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found")
    return path


def load_split(split_dir: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of one split folder, in either layout; returns (x, y) as (N, 3, size, size) uint8."""
    _require_dir(split_dir, "split")
    a_dir, b_dir = split_dir / "A", split_dir / "B"
    if a_dir.is_dir() or b_dir.is_dir():
        _require_dir(a_dir, "source (A)")
        _require_dir(b_dir, "target (B)")
        a_files, b_files = list_images(a_dir), list_images(b_dir)
        a_names, b_names = {p.name for p in a_files}, {p.name for p in b_files}
        if a_names != b_names:
            only_a, only_b = sorted(a_names - b_names), sorted(b_names - a_names)
            side, names = (a_dir, only_a) if only_a else (b_dir, only_b)
            raise UserError(f"{side}: {', '.join(names[:5])} has no pair of the same name in the other folder")
        if not a_files:
            raise UserError(f"{a_dir}: no images found")
        xs, ys = [], []
        for a, b in zip(a_files, sorted(b_files)):
            ia, ib = read_image(a), read_image(b)
            if ia.shape != ib.shape:
                raise UserError(f"{b}: size {ib.shape[1]}x{ib.shape[0]} differs from its pair {a} ({ia.shape[1]}x{ia.shape[0]})")
            xs.append(fit(ia, size))
            ys.append(fit(ib, size))
        return np.stack(xs), np.stack(ys)
    files = list_images(split_dir)
    if not files:
        raise UserError(f"{split_dir}: no images found (expected A/ and B/ folders, or aligned A|B images)")
    xs, ys = [], []
    for f in files:
        img = read_image(f)
        h, w = img.shape[:2]
        if w % 2 or w != 2 * h:
            raise UserError(f"{f}: an aligned A|B image must be twice as wide as it is high, got {w}x{h}")
        xs.append(fit(img[:, : w // 2], size))
        ys.append(fit(img[:, w // 2 :], size))
    return np.stack(xs), np.stack(ys)


def task_folders(root: Path) -> list[Path]:
    _require_dir(root, "--data")
    tasks = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not tasks:
        raise UserError(f"{root}: no task folders found (expected ROOT/<task>/{{train,test}}/)")
    return tasks


def clean_images(folder: Path, size: int) -> list[np.ndarray]:
    """The images of a clean-image folder, each at least ``size`` pixels on its shorter side (HxWx3 uint8)."""
    _require_dir(folder, "--clean-images")
    files = list_images(folder)
    if len(files) < 2:
        raise UserError(f"{folder}: need at least 2 clean images (one for training, one for testing), found {len(files)}")
    out = []
    for f in files:
        img = read_image(f)
        if min(img.shape[:2]) < size:
            img = np.moveaxis(fit(img, size), 0, -1)
        out.append(img)
    return out
