"""Pieces that several methods share."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..memory import module_bytes


class FrozenTeacher:
    """A frozen copy of a network (e.g. the generator after the previous task), kept in ``dtype`` between tasks.

    ``__call__`` runs it without gradient in float32; ``memory_bytes`` counts it as stored.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float16):
        self.dtype = dtype
        self.stored = copy.deepcopy(model).to(dtype).eval()
        for p in self.stored.parameters():
            p.requires_grad_(False)
        self.model = copy.deepcopy(self.stored).float().eval()  # working copy derived from the stored one

    @torch.no_grad()
    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)

    def memory_bytes(self) -> int:
        return module_bytes(self.stored)
