"""PiggybackGAN (Zhai et al. [51]): per-task filters built from a frozen filter bank.

*Original.* Piggyback GAN trains a GAN on the first task normally; its convolution filters become a *filter
bank*. For each new task, every layer gets filters of two kinds: *piggyback filters*, learned linear
combinations of the (frozen) bank's filters, and a small fraction of *unconstrained* new filters. After the
task the new filters join the bank. Each task keeps only its combination coefficients (and its new filters),
so earlier tasks are never changed, and the task's identity chooses which filters run at test time.

*Here.* Every convolution and transposed convolution of the U-Net is such a layer. On task 1 it trains as the
plain U-Net; its filters are the bank. On task t > 1 a layer with n output filters has
``round(--piggyback-new x n)`` new filters and the rest are ``coefficients @ bank`` (coefficients of shape
piggyback filters x bank size); biases and normalisation parameters are per task. Only the current task's
coefficients, new filters, biases and norms train; everything of earlier tasks is frozen, so a task's outputs
never change once it is learned (bit for bit on the same device). A new task starts from the previous task's
network, which is exactly expressible in the grown bank (so it fine-tunes from where it was, like the other
methods). The discriminator is shared and fine-tuned as in TL; it is not needed at test time. The U-Net's
global context (``--context``, on in the quick preset) is not a filter of any task and would be shared, so it is
never trained here: it stays at its inert start and every task's network is a plain U-Net.
At test time the paper's PiggybackGAN answers every task with the network it has when the sequence ends (its
Table 1 shows it forgetting: 12.84 dB on T1): ``piggyback`` is evaluated so, with the newest task's filters
for every task, as every other continual method here is. ``piggyback-ti`` is the same training told the task
identity at test (``eval_generator(t)`` answers with task t's filters): a task-incremental row, which cannot
forget, shown beside ``single`` and marked in the tables.

*Memory.* The first task's network is the generator every method has (not counted, as for TL). What it keeps
beyond it, in bytes as stored (float32): the new filters that joined the bank, the coefficient matrices
(whose width grows with the bank) and the per-task biases and normalisation parameters. Zero after task 1,
then it grows with each task by about the new filters' share of G (sizes at the defaults: docs/results.md, "How
the baselines were set up").
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..memory import tensor_bytes
from .base import Method, Option
from .helpers import PerTaskNet, TaskNorm, TaskState, TaskView, TrainsTaskWeights, convolve


class PiggybackConv(nn.Module):
    """A (transposed) convolution with a filter bank, per-task coefficients, new filters and biases.

    Filters are kept filter-major, (out, in, kh, kw), for both kinds of convolution."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, state: TaskState, new_fraction: float):
        super().__init__()
        self.state = state
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.output_padding = getattr(conv, "output_padding", 0)
        if self.groups != 1:
            raise ValueError("piggyback layers support ungrouped convolutions only")
        w = conv.weight.detach()
        filters = w.transpose(0, 1) if self.transposed else w
        self.n_out = filters.shape[0]
        self.n_new = min(self.n_out, max(0, int(round(new_fraction * self.n_out))))
        self.n_pb = self.n_out - self.n_new
        self.bank0 = nn.Parameter(filters.clone().contiguous())  # task 1's filters: the start of the bank
        self.new = nn.ParameterList()  # unconstrained filters of tasks 2, 3, ... (each joins the bank after its task)
        self.coef = nn.ParameterList()  # piggyback coefficients of tasks 2, 3, ...: (n_pb, bank size at that task)
        self.has_bias = conv.bias is not None
        self.bias = nn.ParameterList([nn.Parameter(conv.bias.detach().clone())] if self.has_bias else [])

    @property
    def n_tasks(self) -> int:
        return 1 + len(self.coef)

    def bank(self, t: int) -> torch.Tensor:
        """The filter bank as task t (0-based, t >= 1) sees it: task 1's filters and the new filters of tasks 2..t."""
        return torch.cat([self.bank0, *self.new[: t - 1]]) if t > 1 else self.bank0

    def task_filters(self, t: int) -> torch.Tensor:
        if t == 0:
            return self.bank0
        bank = self.bank(t)
        piggy = (self.coef[t - 1] @ bank.flatten(1)).view(self.n_pb, *bank.shape[1:])
        return torch.cat([piggy, self.new[t - 1]])

    def add_task(self) -> None:
        """Add the next task's parameters, initialised to reproduce the previous task's layer exactly."""
        t = self.n_tasks
        prev = self.task_filters(t - 1).detach()
        if t == 1:
            coef = torch.eye(self.n_out, dtype=prev.dtype, device=prev.device)[: self.n_pb]
        else:  # the previous coefficients, and zeros on the previous task's new filters (now in the bank)
            c = self.coef[t - 2].detach()
            coef = torch.cat([c, c.new_zeros(self.n_pb, self.n_new)], 1)
        self.coef.append(nn.Parameter(coef.clone()))
        self.new.append(nn.Parameter(prev[self.n_pb :].clone().contiguous()))
        if self.has_bias:
            self.bias.append(nn.Parameter(self.bias[t - 1].detach().clone()))

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        params = [self.bank0] if t == 0 else [self.coef[t - 1], self.new[t - 1]]
        return params + ([self.bias[t]] if self.has_bias else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.state.t
        filters = self.task_filters(t)
        return convolve(self, x, filters, self.bias[t] if self.has_bias else None)


class PiggybackNet(PerTaskNet):
    """A network whose convolutions and norms are made per task (``task`` says which task runs)."""

    layer_types = (PiggybackConv, TaskNorm)

    def __init__(self, net: nn.Module, new_fraction: float):
        super().__init__(net)
        self.n_tasks = 1
        self.wrap(lambda child: self._per_task(child, new_fraction))

    def _per_task(self, child: nn.Module, new_fraction: float) -> nn.Module | None:
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
            return PiggybackConv(child, self.state, new_fraction)
        if isinstance(child, (nn.InstanceNorm2d, nn.BatchNorm2d)):
            return TaskNorm(child, self.state)
        return None

    def add_task(self) -> None:
        for m in self.layers():
            m.add_task()
        self.n_tasks += 1


class Piggyback(TrainsTaskWeights, Method):
    name = "piggyback"
    title = "PiggybackGAN"
    cite = "Zhai et al. [51]: per-task filters from a frozen filter bank"
    options = (Option("piggyback_new", 0.25, "fraction of each layer's filters that are new (unconstrained) on tasks after the first", low=0, high=1),)

    @classmethod
    def build_generator(cls, cfg):
        opts = cls.resolve_options(cfg.method_options.get(cls.name, {}))
        return PiggybackNet(super().build_generator(cfg), opts["piggyback_new"])

    def grow(self, G, placeholder):
        G.add_task()  # a new task starts from the previous task's layer exactly: no random draw

    @classmethod
    def generator_from_checkpoints(cls, cfg, load, after, task):
        G = cls.build_generator(cfg)
        for _ in range(after):
            G.add_task()
        G.load_state_dict(load(after))
        return TaskView(G, task if cls.needs_task_id else after)  # without the task id the newest filters answer

    def eval_generator(self, t):
        """The newest task's filters answer for every task (no task identity at test)."""
        return TaskView(self.ctx.G, self.ctx.G.n_tasks - 1)

    def memory(self):
        convs = [m for m in self.ctx.G.layers() if isinstance(m, PiggybackConv)]
        norms = [m for m in self.ctx.G.layers() if isinstance(m, TaskNorm)]
        return {
            "new_filters": sum(tensor_bytes(list(m.new)) for m in convs),
            "piggyback_coefficients": sum(tensor_bytes(list(m.coef)) for m in convs),
            "task_biases_norms": sum(tensor_bytes(list(m.bias)[1:]) for m in convs)
            + sum(tensor_bytes(list(n.parameters()) + list(n.buffers())) for m in norms for n in m.norms[1:]),
        }


class PiggybackTaskId(Piggyback):
    name = "piggyback-ti"
    title = "PiggybackGAN (task id)"
    cite = "Zhai et al. [51] told the task identity at test (task-incremental)"
    needs_task_id = True

    def eval_generator(self, t):
        return TaskView(self.ctx.G, t)
