"""Running a generator on images of any size: ``predict`` (a batch of images through a model, in eval mode),
``translate_padded`` (the whole image mirrored up to the next multiple of 16) and ``translate_tiled``
(overlapping tiles blended). Both the evaluation (``evaluate``, full-size test images) and ``assocgan
translate`` use them, so they live here, below both, importing nothing of the package: only torch."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MULTIPLE = 16


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 32, device: torch.device | None = None) -> torch.Tensor:
    """The model's outputs on ``x`` ([0, 1] images), in eval mode, clamped to [0, 1]."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        for i in range(0, x.shape[0], batch):
            xb = x[i : i + batch]
            if device is not None:
                xb = xb.to(device)
            outs.append(model(xb).float().clamp(0, 1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs)


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``x`` (N, 3, H, W) extended at the bottom and right to ``height`` x ``width`` by mirroring (by repeating the
    edge where the image is too small to mirror)."""
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph <= 0 and pw <= 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, max(pw, 0), 0, max(ph, 0)), mode=mode)


def _up(n: int, m: int = MULTIPLE) -> int:
    return -(-n // m) * m


def translate_padded(model: nn.Module, x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    h, w = x.shape[-2:]
    return predict(model, pad_to(x, _up(h), _up(w)), device=device)[..., :h, :w]


def _window(tile: int, overlap: int) -> torch.Tensor:
    """Blending weights of one tile: 1 inside, falling linearly to 1 / (overlap + 1) at the edges."""
    i = torch.arange(tile, dtype=torch.float32)
    ramp = torch.minimum(torch.minimum(i + 1, tile - i), torch.tensor(float(overlap + 1))) / (overlap + 1)
    return ramp[:, None] * ramp[None, :]


def _starts(n: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, max(n - tile, 0) + 1, stride))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return starts


def translate_tiled(model: nn.Module, x: torch.Tensor, tile: int, device: torch.device | None = None, batch: int = 8) -> torch.Tensor:
    """``x`` (1, 3, H, W) translated tile by tile (``tile`` a multiple of 16, overlapping by a quarter)."""
    h, w = x.shape[-2:]
    xp = pad_to(x, max(h, tile), max(w, tile))
    H, W = xp.shape[-2:]
    overlap = tile // 4
    stride = tile - overlap
    spots = [(top, left) for top in _starts(H, tile, stride) for left in _starts(W, tile, stride)]
    weight = _window(tile, overlap)
    out = torch.zeros(3, H, W)
    norm = torch.zeros(1, H, W)
    for i in range(0, len(spots), batch):
        part = spots[i : i + batch]
        tiles = torch.cat([xp[..., t : t + tile, left : left + tile] for t, left in part])
        for (t, left), y in zip(part, predict(model, tiles, device=device)):
            out[:, t : t + tile, left : left + tile] += y * weight
            norm[:, t : t + tile, left : left + tile] += weight
    return (out / norm)[None, :, :h, :w]
