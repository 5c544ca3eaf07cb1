"""Bytes as stored: how every method's memory between tasks is counted."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn


def tensor_bytes(tensors: torch.Tensor | Iterable[torch.Tensor] | dict) -> int:
    """Bytes of tensors as they are stored (their own dtype)."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        tensors = tensors.values()
    return sum(tensor_bytes(t) for t in tensors)


def module_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of a module's parameters and buffers, stored in ``dtype`` (their own dtype if None)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        size = torch.empty((), dtype=dtype).element_size() if dtype is not None else t.element_size()
        total += t.numel() * size
    return total


def image_bytes(images: torch.Tensor) -> int:
    """Bytes of images stored as uint8."""
    return images.numel()
