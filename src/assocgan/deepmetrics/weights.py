"""Where the deep metrics find their weights: files the user already has, never downloaded.

Each weights file is looked for, in this order, in an explicit ``weights_dir`` (``--weights-dir``), in the folder
named by the ``ASSOCGAN_WEIGHTS`` environment variable, and in torch's hub cache
(``torch.hub.get_dir()/checkpoints``, where torchvision keeps the backbones it downloaded). Each file may go by
several names (the first is the one to use); a name may include a sub-folder, so a copy of a package's weights
folder works as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import UserError

ENV = "ASSOCGAN_WEIGHTS"

# The accepted names of each file, first the usual one.
ALEXNET = ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth", "alexnet.pth")  # torchvision's AlexNet
VGG16 = ("vgg16-397923af.pth", "vgg16.pth")  # torchvision's VGG16
LPIPS_LIN = {  # the lpips package's (v0.1) learned linear layers, lpips/weights/v0.1/<net>.pth
    net: (f"lpips_{net}.pth", f"{net}.pth", f"weights/v0.1/{net}.pth", f"lpips/weights/v0.1/{net}.pth") for net in ("alex", "vgg")
}
FID_INCEPTION = ("pt_inception-2015-12-05-6726825d.pth", "pt_inception.pth")  # pytorch-fid's InceptionV3
DISTS = ("DISTS.pt", "dists.pt", "DISTS_pytorch/weights.pt", "weights.pt")  # DISTS_pytorch's alpha and beta


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders looked in, in order, each with how the user names it."""
    dirs = []
    if weights_dir is not None:
        dirs.append((f"--weights-dir {weights_dir}", Path(weights_dir)))
    if os.environ.get(ENV):
        dirs.append((f"${ENV} ({os.environ[ENV]})", Path(os.environ[ENV])))
    else:
        dirs.append((f"${ENV} (unset)", None))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    home = str(Path.home())
    shown = str(hub).replace(home, "~", 1) if str(hub).startswith(home) else str(hub)
    dirs.append((shown, hub))
    return dirs


def find_weights(what: str, needs: Sequence[Sequence[str]], weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """The path of each needed file (given as its accepted names), the first found in the folders of
    ``search_dirs``; a ``UserError`` in one line naming every missing file and every folder looked in."""
    found, missing = [], []
    dirs = search_dirs(weights_dir)
    for names in needs:
        path = next((d / n for _, d in dirs if d is not None for n in names if (d / n).is_file()), None)
        if path is None:
            missing.append(names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})")
        found.append(path)
    if missing:
        raise UserError(f"{what} needs {' and '.join(missing)}; looked in {', '.join(label for label, _ in dirs)}; nothing is downloaded")
    return found


def load(path: Path) -> dict[str, torch.Tensor]:
    """A state dict (tensors only) from ``path``, on the CPU; a ``UserError`` when it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which
        raise UserError(f"{path}: not a readable torch weights file ({type(e).__name__}: {e})".replace("\n", " ")) from e
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict, found a {type(state).__name__}")
    return state
