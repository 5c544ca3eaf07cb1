"""Choosing the torch device a command runs on: ``pick_device`` reads ``--device`` (default: cuda if available,
else cpu) and says in a UserError why a device cannot be used here. Training, the runner and ``assocgan
translate`` all choose a device, so the choice lives here, below them, importing nothing of the package but
``errors``."""

from __future__ import annotations

import torch

from .errors import UserError


def pick_device(name: str | None = None) -> torch.device:
    """The torch device ``name`` (default: cuda if available, else cpu); a UserError if it cannot be used here."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this torch has no CUDA device available (torch {torch.__version__}); leave --device out or give cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: MPS is not available here; leave --device out or give cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: unsupported device type {dev.type!r}; give cpu or cuda")
    return dev
