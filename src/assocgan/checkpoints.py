"""Trained generators as files: safetensors with metadata, and the generator that answers for a task, rebuilt
from a run folder alone (``assocgan.load_generator``).

Each checkpoint ``checkpoints/<method>/task<k>_<name>.safetensors`` holds the generator's tensors after task k
and, as safetensors metadata (JSON strings), what is needed to use it without the run: ``method``, ``after_task``
(1-based), ``task`` (its name), ``tasks`` (the run's task names in training order), ``benchmark``, ``metric``,
``needs_task_id``, ``config`` (the run configuration, which fixes the network) and ``assocgan`` (the version),
and ``sha256``, a digest of the tensors that reading checks, so that a file whose bytes were damaged is refused
instead of used. The file's header is written with its keys sorted, so one generator gives one file, byte for
byte (safetensors alone orders the metadata differently in each process).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UserError, is_whole_number
from .io import write_bytes
from .runfolder import RunFolder

FORMAT = "assocgan-generator/1"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in the order of their names."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{v.dtype}|{list(v.shape)}|".encode())
        h.update(v.view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def canonical(data: bytes) -> bytes:
    """The safetensors file ``data`` with its JSON header's keys sorted (padded with spaces to 8 bytes, as the
    format asks): the same tensors and metadata give the same bytes in any process."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + n :]


def save_generator(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "sha256": tensors_digest(state), **{k: json.dumps(v, sort_keys=True) for k, v in meta.items()}}
    write_bytes(path, canonical(save(state, metadata=metadata)))  # bytes, then one atomic write: no temporary file of the library's


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the metadata of a generator checkpoint; a UserError naming the file if it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise UserError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: has no assocgan generator metadata (format {meta.get('format')!r}, expected {FORMAT})")
    if "sha256" in meta and meta["sha256"] != tensors_digest(tensors):
        raise UserError(f"{path}: damaged: its tensors do not match the digest they were saved with; train the method again (--restart)")
    try:
        return tensors, {k: json.loads(v) for k, v in meta.items() if k not in ("format", "sha256")}
    except ValueError as e:
        raise UserError(f"{path}: damaged metadata ({e})") from None


@dataclass
class Trained:
    """A method's trained generator in a run folder: which checkpoint, and what its metadata says."""

    method: str
    after_task: int  # 1-based
    path: Path
    meta: dict[str, Any]

    @property
    def tasks(self) -> list[str]:
        return list(self.meta["tasks"])

    @property
    def needs_task_id(self) -> bool:
        return bool(self.meta.get("needs_task_id"))

    @property
    def size(self) -> int:
        return int(self.meta["config"]["size"])


def _position(value: int | str, names: list[str], what: str, limit: int) -> int:
    """A 1-based task position from a position or a task name, at most ``limit``."""
    if isinstance(value, str) and is_whole_number(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{what} {value!r}: give a task name or a 1-based position")
    k = value if isinstance(value, int) else (names.index(value) + 1 if value in names else None)
    if k is None or not 1 <= k <= limit:
        choices = ", ".join(f"{i} ({n})" for i, n in enumerate(names[:limit], 1))
        raise UserError(f"{what} {value!r}: not one of {choices}")
    return k


def find_trained(run_dir: str | Path, method: str, after_task: int | str | None = None) -> Trained:
    """The checkpoint of ``method`` after task ``after_task`` (a 1-based position or a task name; default: the
    last one saved) in a run folder."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise UserError(f"{folder.path}: run folder not found")
    ckpts = folder.checkpoints(method)
    if not ckpts:
        have = sorted(p.name for p in (folder.path / "checkpoints").iterdir() if p.is_dir()) if (folder.path / "checkpoints").is_dir() else []
        raise UserError(f"{folder.checkpoint_dir(method)}: no checkpoints of method {method!r}" + (f" (this run has {', '.join(have)})" if have else ""))
    last = max(ckpts)
    _, meta = read_checkpoint(ckpts[last])
    k = last if after_task is None else _position(after_task, meta["tasks"], "--after-task", len(meta["tasks"]))
    if k not in ckpts:
        raise UserError(
            f"--after-task {after_task}: {method} has no checkpoint after task {k} in {folder.checkpoint_dir(method)} (it has {', '.join(map(str, sorted(ckpts)))})"
        )
    if k != last:
        _, meta = read_checkpoint(ckpts[k])
    return Trained(method, k, ckpts[k], meta)


def load_generator(run_dir: str | Path, method: str, after_task: int | str | None = None, task: int | str | None = None) -> nn.Module:
    """The generator ``method`` trained in the run folder ``run_dir``, as it stood after task ``after_task`` (a
    1-based position or a task name; default: the last saved), in eval mode on the CPU, mapping [0, 1] images
    (N, 3, H, W with H and W multiples of 16) to [0, 1] images (clamp the output).

    A method evaluated with the task identity (``single``, ``piggyback``) answers for one task: give ``task`` (a
    1-based position or a name, at most ``after_task``); the others answer for every task and ignore it.
    """
    from .config import RunConfig
    from .methods import get_method

    trained = find_trained(run_dir, method, after_task)
    cls = get_method(method)
    names = trained.tasks
    if cls.needs_task_id:
        if task is None:
            raise UserError(
                f"--task: {method} answers with the task's identity; name one of the tasks 1-{trained.after_task} ({', '.join(names[: trained.after_task])})"
            )
        j = _position(task, names, "--task", trained.after_task)
    else:
        j = trained.after_task
    known = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in trained.meta["config"].items() if k in known})
    ckpts = RunFolder(run_dir).checkpoints(method)

    def load(i: int) -> dict[str, torch.Tensor]:
        if i + 1 not in ckpts:
            raise UserError(f"{RunFolder(run_dir).checkpoint_dir(method)}: the checkpoint after task {i + 1} is missing")
        return read_checkpoint(ckpts[i + 1])[0]

    try:
        G = cls.generator_from_checkpoints(cfg, load, trained.after_task - 1, j - 1)
    except RuntimeError as e:  # tensors that do not fit the network the metadata describes
        raise UserError(f"{trained.path}: does not fit the {method} generator its metadata describes ({str(e).splitlines()[0]})") from None
    G.eval()
    for p in G.parameters():
        p.requires_grad_(False)
    return G
