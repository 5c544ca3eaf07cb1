"""Who made a run's numbers (results.json's ``provenance``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__


def provenance(command: str | None, device: torch.device, processes: int = 1) -> dict[str, Any]:
    """Who made a run's numbers: the command, the versions, the device, the date and the source's git commit."""
    import platform
    import subprocess

    commit = None
    try:
        src = Path(__file__).resolve().parent
        done = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if done.returncode == 0:
            commit = done.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    dev = str(device)
    if device.type == "cuda":
        dev += f" ({torch.cuda.get_device_name(device)})"
    return {
        "command": command or " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "assocgan": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": dev,
        "processes": processes,
        "git_commit": commit,
    }
