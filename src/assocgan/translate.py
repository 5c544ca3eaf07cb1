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

from .devices import pick_device
from .errors import UserError
from .imaging import save_png, to_uint8
from .inference import MULTIPLE, _up, pad_to, predict, translate_padded, translate_tiled  # noqa: F401 (pad_to re-exported)

MODES = ("pad", "tile", "fit")


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
    for o in outs:
        if o.resolve() in inputs:
            raise UserError(f"--out {out_dir}: would overwrite the input image {o}; choose another --out")
    existing = [o for o in outs if o.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise UserError(f"--out {out_dir}: {existing[0].name}{more} exist(s) already; give --overwrite to replace them, or choose another --out")
    return outs


def translate_files(
    run_dir: str,
    inputs: list[str],
    out: str,
    method: str | None = None,
    after_task: str | None = None,
    task: str | None = None,
    mode: str = "pad",
    tile: int | None = None,
    device: str | None = None,
    console=None,
    overwrite: bool = False,
) -> list[Path]:
    """``assocgan translate``: each input image through the generator of ``method`` in ``run_dir``, written as
    ``out/<name>.png`` (never over an input; over an earlier output only with ``overwrite``); returns the files
    written."""
    from .checkpoints import find_trained, load_generator
    from .data.folders import read_image
    from .methods import get_method
    from .runfolder import RunFolder

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
        raise UserError(
            f"--task {task}: {method} answers every task with one generator; --task is for the methods evaluated with the task identity (single, piggyback-ti)"
        )
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
                raise UserError(
                    f"{f}: {h}x{w} pixels would need about {need / 2**30:.0f} GiB to translate whole, more than half this machine's "
                    f"{total / 2**30:.0f} GiB; give --mode tile (overlapping tiles, blended){'' if not written else f'; {len(written)} image(s) written so far'}"
                )
            y = translate_image(model, image, mode, info.size, tile, dev)
            written.append(save_png(o, y))
    return written
