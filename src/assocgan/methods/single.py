"""Single: one specialist network per task, each trained alone from the same initial weights with the same
budget (steps, batch, recipe) as every other method, and answering only for its own task.

It is the ceiling a continual method aims at rather than a continual method: it keeps one whole generator per
task and needs the task identity at test time (evaluated with the true task id). Its row of the accuracy
matrix never changes after a task is learned (BWT 0), and its diagonal says what the network, data and
recipe can do on each task alone: a task on which the specialist does not beat doing nothing is a task the
benchmark cannot measure forgetting on.

Before each task G and D are reset to the run's initial weights (the optimisers are new at every task);
after it, G's weights are kept (float32, counted in ``memory_bytes``).
"""

from __future__ import annotations

import copy

import torch

from ..memory import module_bytes
from .base import Method


class Single(Method):
    name = "single"
    title = "Single"
    cite = "one network per task, trained alone (reference ceiling)"
    needs_task_id = True

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.initial = [copy.deepcopy(net.state_dict()) for net in (ctx.G, ctx.D)]
        self.specialists: list[torch.nn.Module] = []

    def before_task(self, t, task):
        for net, state in zip((self.ctx.G, self.ctx.D), self.initial):
            net.load_state_dict(state)

    def after_task(self, t, task):
        self.specialists.append(copy.deepcopy(self.ctx.G).eval())

    def state_dict(self):
        return {"specialists": [g.state_dict() for g in self.specialists]}

    def load_state_dict(self, state, seen):
        self.specialists = []
        for sd in state["specialists"]:
            g = copy.deepcopy(self.ctx.G)
            g.load_state_dict(sd)
            self.specialists.append(g.eval())

    @classmethod
    def generator_from_checkpoints(cls, cfg, load, after, task):
        """Task ``task``'s specialist: the generator saved after that task."""
        return super().generator_from_checkpoints(cfg, load, task, task)

    def eval_generator(self, t):
        return self.specialists[t] if t < len(self.specialists) else self.ctx.G

    def memory(self):
        return {"generators": sum(module_bytes(g) for g in self.specialists)}
