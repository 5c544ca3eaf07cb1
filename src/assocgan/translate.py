"""``assocgan translate``: apply a trained generator of a run folder to image files.

The U-Net takes sides that are multiples of 16. Three ways to bring an image of any size to it:

* ``pad`` (default): the whole image at once, mirrored at its right and bottom edges up to the next multiple
  of 16, and the output cut back to the image's size;
* ``tile``: overlapping square tiles (``--tile``, by default the size the run trained at), each translated on
  its own and blended with weights that fall off towards the tile edges: for images too large to translate at
  once, and closest to what the network saw in training (the global context, if on, then sees each tile);
* ``fit``: as training images are prepared, the shorter side resized to the trained size and the centre cut
  square; the output is that square.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .evaluate import predict
from .imaging import save_png, to_uint8

MODES = ("pad", "tile", "fit")
MULTIPLE = 16


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
        tiles = torch.cat([xp[..., t : t + tile, l : l + tile] for t, l in part])
        for (t, l), y in zip(part, predict(model, tiles, device=device)):
            out[:, t : t + tile, l : l + tile] += y * weight
            norm[:, t : t + tile, l : l + tile] += weight
    return (out / norm)[None, :, :h, :w]


def translate_image(model: nn.Module, image: np.ndarray, mode: str, size: int, tile: int | None = None, device: torch.device | None = None) -> np.ndarray:
    """One HxWx3 uint8 image through ``model``; returns the output as HxWx3 uint8 (size x size with ``fit``)."""
    from .data.folders import fit

    if mode == "fit":
        x = torch.from_numpy(fit(image, size))[None].float().div(255)
        y = predict(model, x, device=device)
    else:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float().div(255)
        y = translate_padded(model, x, device) if mode == "pad" else translate_tiled(model, x, tile or size, device)
    return to_uint8(y)[0]


def input_files(inputs: list[str]) -> list[Path]:
    """The image files named, or in the folders named (not recursive), in order; a UserError for a missing
    path, a folder without images or two inputs that would write the same output file."""
    from .data.folders import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise UserError(f"{p}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    seen: dict[str, Path] = {}
    for f in files:
        if len(f"{f.stem}.png".encode()) > 255:
            raise UserError(f"{f}: its name is too long for the output file {f.stem[:20]}....png; rename it")
        if f.stem in seen and seen[f.stem] != f:
            raise UserError(f"{f}: would be written to the same {f.stem}.png as {seen[f.stem]}; translate them into different --out folders")
        seen[f.stem] = f
    return files


def output_files(files: list[Path], out_dir: Path, overwrite: bool) -> list[Path]:
    """``out_dir/<name>.png`` for each input; a UserError for an output that is one of the inputs (never
    overwritten), or that exists already unless ``overwrite``."""
    inputs = {f.resolve() for f in files}
    outs = [out_dir / f"{f.stem}.png" for f in files]
    for f, o in zip(files, outs):
        if o.resolve() in inputs:
            raise UserError(f"--out {out_dir}: would overwrite the input image {o}; choose another --out")
    existing = [o for o in outs if o.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise UserError(f"--out {out_dir}: {existing[0].name}{more} exist(s) already; give --overwrite to replace them, or choose another --out")
    return outs


def translate_files(run_dir: str, inputs: list[str], out: str, method: str | None = None, after_task: str | None = None, task: str | None = None,
                    mode: str = "pad", tile: int | None = None, device: str | None = None, console=None, overwrite: bool = False) -> list[Path]:
    """``assocgan translate``: each input image through the generator of ``method`` in ``run_dir``, written as
    ``out/<name>.png`` (never over an input; over an earlier output only with ``overwrite``); returns the files
    written."""
    from .checkpoints import find_trained, load_generator
    from .data.folders import read_image
    from .methods import get_method
    from .runfolder import RunFolder
    from .train import pick_device

    if mode not in MODES:
        raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if tile is not None and (tile < MULTIPLE or tile % MULTIPLE):
        raise UserError(f"--tile {tile}: must be a positive multiple of {MULTIPLE}")
    from .config import MAX_SIZE, machine_memory

    if tile is not None and tile > MAX_SIZE:
        raise UserError(f"--tile {tile}: must be at most {MAX_SIZE}")
    if method is None:
        trained = sorted(p.name for p in (Path(run_dir) / "checkpoints").glob("*") if RunFolder(run_dir).checkpoints(p.name))
        if len(trained) != 1:
            raise UserError(f"--method: name the method to apply ({', '.join(trained) or 'this folder has no checkpoints'})")
        method = trained[0]
    cls = get_method(method)
    if task is not None and not cls.needs_task_id:
        raise UserError(f"--task {task}: {method} answers every task with one generator; --task is for the methods evaluated with the task "
                        f"identity (single, piggyback-ti)")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file, not a folder")
    files = input_files(inputs)
    outs = output_files(files, out_dir, overwrite)
    dev = pick_device(device)
    info = find_trained(run_dir, method, after_task)
    model = load_generator(run_dir, method, info.after_task, task).to(dev)
    written = []
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("translating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=console is None, transient=True) as progress:
        ngf = int((info.meta.get("config") or {}).get("ngf", 64))
        total = machine_memory()
        for f, o in progress.track(list(zip(files, outs))):
            image = read_image(f)
            h, w = image.shape[:2]
            need = _up(h) * _up(w) * ngf * 16  # measured: 330 bytes a pixel at ngf 32 (1024 px, no gradient); 1.5 times that
            if mode == "pad" and total is not None and need > total // 2:
                raise UserError(f"{f}: {h}x{w} pixels would need about {need / 2**30:.0f} GiB to translate whole, more than half this machine's "
                                f"{total / 2**30:.0f} GiB; give --mode tile (overlapping tiles, blended){'' if not written else f'; {len(written)} image(s) written so far'}")
            y = translate_image(model, image, mode, info.size, tile, dev)
            written.append(save_png(o, y))
    return written
