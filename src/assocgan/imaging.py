"""Image files: tensors to PNG grids, written atomically."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from .io import write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    return (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def grid(rows: list[list[torch.Tensor]], pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile rows of (N, 3, H, W) image batches side by side into one HxWx3 uint8 image (white gaps)."""
    tiles = [[to_uint8(b) for b in row] for row in rows]
    h, w = tiles[0][0].shape[1:3]
    n_cols = max(sum(t.shape[0] for t in row) for row in tiles)
    out = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        c = 0
        for batch in row:
            for img in batch:
                top, left = pad + r * (h + pad), pad + c * (w + pad)
                out[top : top + h, left : left + w] = img
                c += 1
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> Path:
    return write_bytes(path, png_bytes(image))
