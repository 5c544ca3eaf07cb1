"""Image files: tensors to labelled PNG grids, written atomically."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .io import write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    return (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class Picture:
    """Rows of image blocks with their words: a header over each block (column), a label over each row (a task),
    and optionally a line under each image (its score); ``compare_to``: the block the others are scored against
    where the captions are left to the caller (None: no scores)."""

    rows: list[list[torch.Tensor]]
    headers: list[str]
    row_labels: list[str] = field(default_factory=list)
    captions: list[list[list[str] | None]] | None = None
    compare_to: int | None = None


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow before 10.1: its one bitmap font
        return ImageFont.load_default()


def labelled_grid(pic: Picture, scale: int = 1, pad: int = 2, block_gap: int = 12, font_size: int = 11) -> np.ndarray:
    """``pic`` as one HxWx3 uint8 image: the headers above the columns of blocks, a wider white gap between blocks
    and between rows, each row's label above it and each image's caption under it (tiles enlarged ``scale`` times,
    the words not)."""
    from PIL import Image, ImageDraw

    tiles = [[to_uint8(b) for b in row] for row in pic.rows]
    if scale > 1:
        tiles = [[t.repeat(scale, 1).repeat(scale, 2) for t in row] for row in tiles]
    h, w = tiles[0][0].shape[1:3]
    font = _font(font_size)
    line = font_size + 4
    counts = [max(row[b].shape[0] if b < len(row) else 0 for row in tiles) for b in range(max(len(r) for r in tiles))]
    block_w = [n * (w + pad) - pad for n in counts]
    lefts = [pad + sum(block_w[:b]) + b * block_gap for b in range(len(counts))]
    width = lefts[-1] + block_w[-1] + pad
    has_caps = pic.captions is not None and any(c for row in pic.captions for c in row)
    row_h = (line if pic.row_labels else 0) + h + (line if has_caps else 0)
    top0 = line + 2
    height = top0 + len(tiles) * row_h + (len(tiles) - 1) * block_gap + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for b, text in enumerate(pic.headers[: len(counts)]):
        tw = draw.textlength(text, font=font)
        draw.text((lefts[b] + max(0.0, (block_w[b] - tw) / 2), 1), text, fill=(0, 0, 0), font=font)
    for r, row in enumerate(tiles):
        top = top0 + r * (row_h + block_gap)
        if pic.row_labels:
            draw.text((pad, top), pic.row_labels[r], fill=(40, 40, 40), font=font)
            top += line
        for b, batch in enumerate(row):
            caps = pic.captions[r][b] if has_caps and b < len(pic.captions[r]) else None
            for i, img in enumerate(batch):
                left = lefts[b] + i * (w + pad)
                canvas.paste(Image.fromarray(img), (left, top))
                if caps and i < len(caps):
                    tw = draw.textlength(caps[i], font=font)
                    draw.text((left + max(0.0, (w - tw) / 2), top + h + 1), caps[i], fill=(60, 60, 60), font=font)
    return np.asarray(canvas).copy()


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> Path:
    return write_bytes(path, png_bytes(image))
