"""Atomic writes: a file is either the old one or the complete new one, never half written."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTIAL = ".assocgan-partial-"  # in the name of a file being written: ``.NAME.assocgan-partial-XXXXXXXX.SUFFIX``
_PARTIAL_NAME = re.compile(r"^\.(?P<name>.+)" + re.escape(PARTIAL) + r"[a-z0-9_]{8}(?P<suffix>(\.[^.]*)?)$")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_partial_file(path: Path) -> bool:
    """Whether ``path`` is named as ``atomic_write`` names a file it is writing (``.NAME.assocgan-partial-`` and
    mkstemp's 8 characters, then NAME's suffix)."""
    m = _PARTIAL_NAME.match(path.name)
    return m is not None and Path(m["name"]).suffix == m["suffix"]


def remove_partial_files(folder: str | Path, subfolders: tuple[str, ...] = ()) -> int:
    """Delete the half-written files that a process killed in the middle of ``atomic_write`` left in ``folder``
    and under its ``subfolders`` (those the caller writes); returns how many. Only files named exactly as
    ``atomic_write`` names them go: nothing else a user keeps there. Call it only while no other process writes
    there."""
    folder = Path(folder)
    places = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    for sub in subfolders:
        if (folder / sub).is_dir():
            places += [p for p in (folder / sub).rglob("*") if p.is_file()]
    n = 0
    for p in places:
        if is_partial_file(p):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def read_json_file(path: str | Path, what: str, remedy: str) -> Any:
    """``path``'s JSON, or None if there is no such file; a UserError naming the file (``what`` it should be,
    ``remedy`` what to do) when it cannot be read, is not JSON, or is nested too deeply to be one."""
    from .errors import UserError

    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); {remedy}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be {what}; {remedy}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None


def read_json(path: str | Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))
