"""JL: joint training on every task seen so far, the upper bound. It keeps every task's training pairs."""
from __future__ import annotations

import torch

from .base import Batch, Method


class JL(Method):
    name = "jl"
    title = "JL"
    cite = "joint learning (upper bound)"

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.seen = []

    def before_task(self, t, task):
        self.seen.append(task)

    def batch(self, t, task):
        """Each sample from a task drawn uniformly among those seen so far."""
        n = self.ctx.cfg.batch_size
        which = torch.randint(0, len(self.seen), (n,), generator=self.ctx.gen)
        return Batch.cat(*(Batch.of(*self.ctx.sample(self.seen[k], int((which == k).sum())), k, Batch.CURRENT if k == t else Batch.STORED)
                           for k in range(len(self.seen)) if (which == k).any()))

    def load_state_dict(self, state, seen):
        self.seen = list(seen)

    def memory(self):
        # the training pairs of every task seen, as the benchmark stores them
        return {"pairs": sum(task.pair_bytes() for task in self.seen)}
