"""JL: joint training on every task seen so far, the upper bound. It keeps every task's training pairs."""
from __future__ import annotations

import torch

from .base import Method


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
        parts = [self.seen[k].sample(int((which == k).sum()), self.ctx.gen) for k in range(len(self.seen)) if (which == k).any()]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def load_state_dict(self, state, seen):
        self.seen = list(seen)

    def memory(self):
        # the training pairs of every task seen, as the benchmark stores them
        return {"pairs": sum(task.pair_bytes() for task in self.seen)}
