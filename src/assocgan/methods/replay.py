"""Replay (Lesort et al. [21]): a memory of raw training pairs of past tasks, replayed in every batch.

*Original.* Lesort et al. compare strategies for continual generative models; the simplest and strongest
baseline keeps a random subset of each past task's real training samples and mixes them into the training
data of later tasks.

*Here.* When a task ends (``after_task``, while its data is still there) a random subset of its training
pairs is stored as uint8 images, source and target together: exactly the pairs the task's data set holds
(with ``--fresh-degradations`` too, where training draws new sources, the store keeps the task's fixed
ones). While task t > 1 trains, a share of each batch is drawn from the memory (for each replayed sample a
past task uniformly, then one of its stored pairs, with a random horizontal flip as for current pairs); the
rest comes from the current task.
The default share is t / (t + 1) of the batch, the share JL gives the past tasks; the number of replayed
samples is that share of the batch size, rounded at random so that its mean is exact.

The budget is either ``--quota`` per task (below 1 a fraction of the task's training set, from 1 a count of
pairs) or ``--replay-bytes``, a total byte budget shared evenly among the past tasks: when a new task
arrives each task's share shrinks and the older stores are cut to it (the pairs cut are chosen at random).
With ``--replay-bytes`` the memory stays at (nearly) the budget from the first task on; with a quota it
grows by one store per task.

*Memory.* The stored pairs, in bytes as stored: 2 x pairs x 3 x H x W uint8, a share of what JL keeps of the
same task (sizes at the quick preset: docs/results.md, "How the baselines were set up").
"""

from __future__ import annotations

import math

import torch

from ..data.tasks import random_flips, to_float
from ..errors import UserError
from ..memory import image_bytes
from .base import Batch, Method, Option


def replay_count(fraction: float, n: int, gen: torch.Generator) -> int:
    """How many of a batch of ``n`` are replayed: ``fraction * n`` rounded at random (mean exact)."""
    want = min(max(fraction, 0.0), 1.0) * n
    base = math.floor(want)
    if want > base and float(torch.rand((), generator=gen)) < want - base:
        base += 1
    return int(base)


def past_share(option: float, t: int) -> float:
    """The replayed share of a batch on task ``t``: the option, or t / (t + 1) (as JL) when it is negative."""
    return t / (t + 1) if option < 0 else option


class Replay(Method):
    name = "replay"
    batch_ahead = False  # ``last_replayed`` describes the batch being trained, so it is made when it is needed
    title = "Lesort et al. (replay)"
    cite = "Lesort et al. [21]: replay of stored raw pairs"
    options = (
        Option(
            "quota",
            0.1,
            "pairs stored per past task: below 1 a fraction of its training set, from 1 a count (ignored with --replay-bytes)",
            low=0,
            open_low=True,
        ),
        Option("replay_bytes", 0.0, "total bytes of stored pairs, shared evenly among past tasks (0: use --quota)", low=0),
        Option("replay_fraction", -1.0, "share of each batch replayed from the memory (negative: t/(t+1) on task t, as JL)", high=1),
    )

    @classmethod
    def resolve_options(cls, given):
        """The base's, and a quota from 1 on must be a count (a whole number of pairs), not rounded silently."""
        opts = super().resolve_options(given)
        if opts["quota"] >= 1 and opts["quota"] != int(opts["quota"]):
            raise UserError(f"--quota {opts['quota']:g}: from 1 on it is a count of pairs; give a whole number, or a fraction below 1")
        return opts

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.stores: list[tuple[torch.Tensor, torch.Tensor]] = []  # per past task: (x, y) uint8 (N, 3, H, W)
        # provenance, for inspection only (replay does not need it; a few bytes, not counted):
        self.task_of_store: list[int] = []  # the task index each store came from
        self.source_index: list[torch.Tensor] = []  # each stored pair's index in its task's training set
        self.last_replayed: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))

    # ---- the budget ------------------------------------------------------------------------
    def per_task_pairs(self, task, n_past: int) -> int:
        """Pairs each past task keeps when ``n_past`` tasks share the memory."""
        if self.settings.replay_bytes > 0:
            share = int(self.settings.replay_bytes) // n_past
            n = share // task.pair_bytes(1)
        elif self.settings.quota < 1:
            n = int(round(self.settings.quota * task.n_train))
        else:
            n = int(round(self.settings.quota))
        return max(0, min(n, task.n_train))

    # ---- hooks -----------------------------------------------------------------------------
    def check_tasks(self, tasks):
        one = tasks[0].pair_bytes(1)
        if 0 < self.settings.replay_bytes < len(tasks) * one:
            raise UserError(
                f"--replay-bytes {self.settings.replay_bytes:g}: too small to keep one pair of each of {len(tasks)} tasks "
                f"(one pair is {one} bytes; give at least {len(tasks) * one})"
            )
        if self.settings.replay_bytes == 0:
            for task in tasks[:-1]:  # the last task is never replayed
                if self.per_task_pairs(task, 1) == 0:
                    raise UserError(
                        f"--quota {self.settings.quota:g}: keeps no pair of task {task.name}'s {task.n_train} training pairs; "
                        f"give at least {1 / task.n_train:.3g} (a fraction) or 1 (a count)"
                    )

    def after_task(self, t, task):
        gen = self.ctx.gen
        n_past = len(self.stores) + 1
        if self.settings.replay_bytes > 0:  # the shares shrink: cut the older stores (their order is already random)
            for k, (x, y) in enumerate(self.stores):
                keep = min(x.shape[0], int(self.settings.replay_bytes) // n_past // (2 * x[0].numel()))
                self.stores[k] = (x[:keep].clone(), y[:keep].clone())
                self.source_index[k] = self.source_index[k][:keep].clone()
        n = self.per_task_pairs(task, n_past)
        idx = torch.randperm(task.n_train, generator=gen)[:n]
        self.stores.append((task.train_x[idx].clone(), task.train_y[idx].clone()))  # the task's own stored pairs
        self.task_of_store.append(t)
        self.source_index.append(idx)

    def batch(self, t, task):
        gen, n = self.ctx.gen, self.ctx.cfg.batch_size
        live = [k for k, (x, _) in enumerate(self.stores) if x.shape[0] > 0]
        n_old = replay_count(past_share(self.settings.replay_fraction, t), n, gen) if live else 0
        current = Batch.of(*self.ctx.sample(task, n - n_old), t)
        if n_old == 0:
            self.last_replayed = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
            return current
        which = torch.tensor(live)[torch.randint(0, len(live), (n_old,), generator=gen)]
        rows = torch.empty(n_old, dtype=torch.long)
        for k in which.unique().tolist():
            sel = which == k
            rows[sel] = torch.randint(0, self.stores[k][0].shape[0], (int(sel.sum()),), generator=gen)
        xs = to_float(torch.stack([self.stores[k][0][r] for k, r in zip(which.tolist(), rows.tolist())]), self.ctx.device)
        ys = to_float(torch.stack([self.stores[k][1][r] for k, r in zip(which.tolist(), rows.tolist())]), self.ctx.device)
        xs, ys = random_flips(gen, xs, ys)  # the augmentation Task.sample applies
        tasks = torch.tensor([self.task_of_store[k] for k in which.tolist()])
        self.last_replayed = (tasks, rows)
        return Batch.cat(current, Batch.of(xs, ys, tasks, Batch.STORED))

    def state_dict(self):
        return {"stores": [list(s) for s in self.stores], "task_of_store": list(self.task_of_store), "source_index": list(self.source_index)}

    def load_state_dict(self, state, seen):
        self.stores = [(x, y) for x, y in state["stores"]]
        self.task_of_store = list(state["task_of_store"])
        self.source_index = list(state["source_index"])

    def memory(self):
        return {"pairs": sum(image_bytes(x) + image_bytes(y) for x, y in self.stores)}
