"""JL: joint training on every task seen so far, the upper bound. It keeps every task's training pairs.

With ``--jl-batch each`` (the default) every step trains on a batch of each task seen so far (on task t, t
batches of ``--batch-size``, drawn alike from each task), so every task's pairs are seen as often as its
specialist (``single``) sees its own, as a cumulative learner trained by epochs over the union of the tasks'
data sees them (Avalanche's ``Cumulative``): a step on task t costs t steps of TL. With ``--jl-batch shared``
the tasks seen share one batch of ``--batch-size``, each sample from a task drawn uniformly (the earlier
protocol): the newest task is then seen on 1/t of the samples its specialist has, and a task whose correction
nothing before it resembles is learned far below what the network can do on it (a faded print after noise, blur
and a colour cast: 23.6 dB against the specialist's 44.9; docs/results.md, "Why JL fell short of the specialists
on the colour tasks").
"""

from __future__ import annotations

import torch

from .base import Batch, Method, Option


class JL(Method):
    name = "jl"
    title = "JL"
    cite = "joint learning (upper bound)"
    options = (
        Option(
            "jl_batch",
            "each",
            "each: a batch of every task seen at each step (each task seen as often as its specialist sees it); shared: the tasks seen share one batch",
            choices=("each", "shared"),
        ),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.seen = []

    def before_task(self, t, task):
        self.seen.append(task)

    def batch(self, t, task):
        n = self.ctx.cfg.batch_size
        source = lambda k: Batch.CURRENT if k == t else Batch.STORED
        if self.settings.jl_batch == "each":
            return Batch.cat(*(Batch.of(*self.ctx.sample(s, n), k, source(k)) for k, s in enumerate(self.seen)))
        which = torch.randint(0, len(self.seen), (n,), generator=self.ctx.gen)
        return Batch.cat(
            *(Batch.of(*self.ctx.sample(self.seen[k], int((which == k).sum())), k, source(k)) for k in range(len(self.seen)) if (which == k).any())
        )

    def load_state_dict(self, state, seen):
        self.seen = list(seen)

    def memory(self):
        # the training pairs of every task seen, as the benchmark stores them
        return {"pairs": sum(task.pair_bytes() for task in self.seen)}
