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
MAX_PIXELS = 64_000_000  # a larger image is refused before it is decoded (a decompression bomb, or a mistake)
MAX_NAME_BYTES = 200  # a task name longer than this would make file names the file system refuses


def hidden(p: Path) -> bool:
    """Files and folders that are not data: hidden ones (``.x``, macOS's ``._x`` resource forks) and ``__MACOSX``."""
    return p.name.startswith(".") or p.name == "__MACOSX"


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not hidden(p) and p.suffix.lower() in IMAGE_SUFFIXES)


def _to_rgb8(im) -> np.ndarray:
    """A decoded PIL image as HxWx3 uint8: 16-bit and float images scaled (not clipped) to 8 bits, transparency
    composited on white, palette and grey images expanded."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        top = 1.0 if im.mode == "F" and a.max(initial=0) <= 1.0 else (255.0 if im.mode in ("I", "F") and a.max(initial=0) <= 255 else 65535.0)
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def read_image(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8, upright as its EXIF orientation says; a clear error naming the file if it
    cannot be read or is too large."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise UserError(f"{path}: {w}x{h} pixels is more than the {MAX_PIXELS // 1_000_000} megapixels an image may have; shrink it first")
                im.load()
                return _to_rgb8(ImageOps.exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{path}: refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
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


def native_pairs(split_dir: Path) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Pairs of one split folder, in either layout, at their own size: (file, source, target) as HxWx3 uint8."""
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
        pairs = []
        for a, b in zip(a_files, sorted(b_files)):
            ia, ib = read_image(a), read_image(b)
            if ia.shape != ib.shape:
                raise UserError(f"{b}: size {ib.shape[1]}x{ib.shape[0]} differs from its pair {a} ({ia.shape[1]}x{ia.shape[0]})")
            pairs.append((b, ia, ib))
        return pairs
    files = list_images(split_dir)
    if not files:
        raise UserError(f"{split_dir}: no images found (expected A/ and B/ folders, or aligned A|B images)")
    pairs = []
    for f in files:
        img = read_image(f)
        h, w = img.shape[:2]
        if w % 2 or w != 2 * h:
            raise UserError(f"{f}: an aligned A|B image must be twice as wide as it is high, got {w}x{h}")
        pairs.append((f, img[:, : w // 2], img[:, w // 2 :]))
    return pairs


def fit_pairs(pairs: list[tuple[Path, np.ndarray, np.ndarray]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """``native_pairs`` fitted to ``size``: (x, y) as (N, 3, size, size) uint8."""
    return np.stack([fit(a, size) for _, a, _ in pairs]), np.stack([fit(b, size) for _, _, b in pairs])


def load_split(split_dir: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of one split folder, in either layout; returns (x, y) as (N, 3, size, size) uint8."""
    return fit_pairs(native_pairs(split_dir), size)


def task_folders(root: Path) -> list[Path]:
    _require_dir(root, "--data")
    tasks = sorted(p for p in root.iterdir() if p.is_dir() and not hidden(p))
    if not tasks:
        raise UserError(f"{root}: no task folders found (expected ROOT/<task>/{{train,test}}/)")
    for t in tasks:
        if len(t.name.encode()) > MAX_NAME_BYTES:
            raise UserError(
                f"{t}: a task name of {len(t.name.encode())} bytes is too long for the file names made from it; rename the folder (at most {MAX_NAME_BYTES} bytes)"
            )
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
