"""CMC (Kar, Ghosh & Biswas, ICVGIP 2025): every convolution kernel estimated from a shared, growing knowledge base.

*Original.* "Continual Memory in Convolution" changes only the convolution layer: a layer does not store its
kernel but builds it, for the task at hand, from a memory bank shared by the tasks (the knowledge base) and a
task-dependent vector, ``K_w = T_w (M_w ⊙ H)`` with ``K_w`` (1 x m) the kernel, ``M_w`` (t x m) the memory of
capacity t and ``T_w`` (1 x t) the task's vector, and convolves with it (``F_out = F_in ⊛ K_w``). The memory grows
as tasks arrive; what earlier tasks learned stays in it, so a new task reuses their knowledge without changing
them, and the task's identity chooses the task vector at test. No backbone change, no replay, and the
convolution costs what it did (the kernel is built once per forward).

*Here.* Every convolution and transposed convolution of the generator is such a layer. With its kernel written
filter-major, each of its ``C_out`` filters a row of ``C_in k k`` numbers (a transposed convolution's kernel is
transposed to that), the layer keeps a bank of filter atoms, ``m`` rows of ``C_in k k`` per task
(``--cmc-atoms``, at most ``min(C_out, C_in k k)`` in a layer, beyond which more atoms add no rank), and task t's
kernel is

    W_t = reshape(C_t [A_1; A_2; ...; A_t]),   A_k: m x (C_in k k) (task k's atoms),   C_t: C_out x (t m),

task t's coefficients over the whole bank as it stands at task t: the frozen atoms of tasks 1..t-1 and its own
new ones. Task 1 trains its atoms and coefficients from scratch: atoms uniform in +-1/sqrt(C_in k k) (the default
convolution initialisation) and coefficients normal with the standard deviation that gives the built kernel the
generator's own initial scale (pix2pix N(0, 0.02); zero coefficients where the kernel starts at zero, the
residual U-Net's last layer, so the untrained network is the identity as every method's is). A later task
gets ``m`` new atoms drawn so and starts from the previous task's coefficients with zeros on its new atoms, i.e.
exactly at the previous task's network (it fine-tunes from where the sequence was, as the other methods do).
Every draw comes from a side stream of its own per task (``rng.side_stream(seed, "cmc", t)``), so the run's
stream sees the same draws as every other method's. Task t trains only its coefficients, its new atoms, and its
own biases and normalisation layers (per task, each starting from the previous task's); everything earlier tasks
kept is frozen, so a task's outputs never change once it is learned (bit for bit on the same device) and the
method needs the task identity at test (a task-incremental row, beside ``single``, ``piggyback-ti`` and ``lora``).
The discriminator is shared and fine-tuned as in TL.

*Departure.* Only the paper's abstract and its kernel equation could be read here; the shapes and the rest are
this project's choices. The memory's entries are filter atoms combined per output filter (``C_t`` holds a vector
over the bank for each filter), where the equation reads as whole kernels combined by one vector per layer: a
whole-kernel entry costs a layer's full kernel per task, a filter atom ``C_in k k`` numbers, and per-filter
coefficients share the bank more finely. ``H`` (whose role was not readable) is left out: a task's coefficients
span just the atoms that exist at its task, which is the mask a growing memory needs. Biases and normalisation
layers are per task, as the equation covers kernels only. The U-Net's global context (``--context``) and the
gated architecture's gate, FiLM and colour stage are not convolutions and would be shared, so they are never
trained here: they stay at their inert start (as for PiggybackGAN). ``--norm batch`` works: each task has its own
normalisation layers and statistics, which no later task runs in training.

*Budget.* Task t keeps ``m (C_in k k) + C_out t m`` numbers per convolution (its atoms and its coefficients),
plus its biases and norms: at the default m = 16 and ``--ngf 64`` (the U-Net's 8 convolutions of 4x4 kernels)
that is 471,817 + 22,537 (t - 1) parameters for task t (and 3,075 biases and norm parameters), task 1's 7.6% of the
plain U-Net's 6.17 M kernel weights; at the smoke preset's ``--ngf 8``, 55,049 + 2,697 (t - 1) (and 387), 57% of
its 97,408. Task 1's kernels have rank at most m, task t's at most t m: the bank is what later tasks build on.

*Memory* counts, in bytes as stored (float32), the whole bank and every task's coefficients (task 1's included:
they stand in place of the plain generator's kernels, which are not kept, so the count is of everything the
kernels are made from), and the biases and normalisation layers of the tasks after the first; the rest (task 1's
biases and norms, the inert context) is the generator every method has.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..memory import tensor_bytes
from ..rng import side_stream
from .base import Method, Option
from .helpers import PerTaskNet, TaskNorm, TaskState, TaskView, TrainsTaskWeights, convolve


class CmcConv(nn.Module):
    """A (transposed) convolution whose kernel for task t is task t's coefficients over the bank of filter atoms."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, state: TaskState, atoms: int, gen: torch.Generator):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("cmc layers support ungrouped convolutions only")
        self.state = state
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.output_padding = getattr(conv, "output_padding", 0)
        w = conv.weight.detach()
        filters = w.transpose(0, 1) if self.transposed else w
        self.shape = tuple(filters.shape)  # (C_out, C_in, kh, kw), filter-major
        self.n_out = self.shape[0]
        self.fan_in = filters.numel() // self.n_out  # C_in k k
        self.m = min(atoms, self.n_out, self.fan_in)  # atoms per task
        # the standard deviation of the generator's own initial kernel (a network built on the meta device has no values)
        self.init_std = 0.0 if w.is_meta or w.numel() < 2 else float(w.float().std())
        self.atoms = nn.ParameterList()  # task k's atoms: (m, C_in k k)
        self.coef = nn.ParameterList()  # task k's coefficients over the bank at task k: (C_out, (k + 1) m)
        self.has_bias = conv.bias is not None
        self.bias = nn.ParameterList()  # task k's bias
        self._first_bias = conv.bias.detach() if self.has_bias else None  # task 1's bias starts as the built one
        self.add_task(gen, w.device)
        self._first_bias = None

    @property
    def n_tasks(self) -> int:
        return len(self.coef)

    def bank(self, t: int) -> torch.Tensor:
        """The atoms task t (0-based) combines: those of tasks 1..t+1, (t + 1) m rows."""
        return torch.cat(list(self.atoms[: t + 1])) if t > 0 else self.atoms[0]

    def filters(self, t: int) -> torch.Tensor:
        """Task t's kernel, filter-major (C_out, C_in, kh, kw)."""
        return (self.coef[t] @ self.bank(t)).view(self.shape)

    def add_task(self, gen: torch.Generator, device: torch.device | None = None) -> None:
        """The next task's atoms (uniform in +-1/sqrt(C_in k k) from ``gen``), coefficients and bias: task 1's
        coefficients give the kernel the generator's initial scale; a later task's reproduce the previous task's kernel."""
        k = self.n_tasks
        device = self.atoms[0].device if k else device
        bound = 1.0 / math.sqrt(self.fan_in)
        atoms = (torch.rand(self.m, self.fan_in, generator=gen, dtype=torch.float32, device="cpu") * 2 - 1) * bound
        if k == 0:
            std = self.init_std * math.sqrt(3 * self.fan_in / self.m)  # var(W) = m var(C) var(A), var(A) = 1 / (3 C_in k k)
            coef = torch.randn(self.n_out, self.m, generator=gen, dtype=torch.float32, device="cpu") * std
            if std == 0:
                coef.zero_()
        else:
            prev = self.coef[k - 1].detach()
            coef = torch.cat([prev, prev.new_zeros(self.n_out, self.m)], 1)
        self.atoms.append(nn.Parameter(atoms.to(device)))
        self.coef.append(nn.Parameter(coef.to(device).clone()))
        if self.has_bias:
            self.bias.append(nn.Parameter((self._first_bias if k == 0 else self.bias[k - 1].detach()).clone()))

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return [self.atoms[t], self.coef[t]] + ([self.bias[t]] if self.has_bias else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.state.t
        w = self.filters(t)
        return convolve(self, x, w, self.bias[t] if self.has_bias else None)


class CmcNet(PerTaskNet):
    """A generator whose convolution kernels are built per task from a shared bank (``task`` says which task runs)."""

    layer_types = (CmcConv, TaskNorm)

    def __init__(self, net: nn.Module, atoms: int, gen: torch.Generator):
        super().__init__(net)
        self.wrap(lambda child: self._per_task(child, atoms, gen))

    def _per_task(self, child: nn.Module, atoms: int, gen: torch.Generator) -> nn.Module | None:
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
            return CmcConv(child, self.state, atoms, gen)
        if isinstance(child, (nn.InstanceNorm2d, nn.BatchNorm2d)):
            return TaskNorm(child, self.state)
        return None

    def convs(self) -> list[CmcConv]:
        return [m for m in self.modules() if isinstance(m, CmcConv)]

    @property
    def n_tasks(self) -> int:
        return self.convs()[0].n_tasks

    def add_task(self, gen: torch.Generator) -> None:
        for m in self.layers():
            m.add_task(gen)


class Cmc(TrainsTaskWeights, Method):
    name = "cmc"
    title = "CMC (Kar et al.)"
    cite = "Kar, Ghosh & Biswas, ICVGIP 2025: convolution kernels estimated from a shared knowledge base that grows with the tasks"
    needs_task_id = True
    options = (Option("cmc_atoms", 16, "filter atoms each convolution's knowledge base gains per task (at most the layer's filters)", low=1),)

    @classmethod
    def build_generator(cls, cfg):
        """The generator with task 1's atoms and coefficients (drawn from the side stream of task 1)."""
        opts = cls.resolve_options(cfg.method_options.get(cls.name, {}))
        return CmcNet(super().build_generator(cfg), opts["cmc_atoms"], side_stream(cfg.seed, "cmc", 0))

    def grow(self, G, placeholder):
        # a new task's atoms from a side stream of its own; placeholders (replaced by saved tensors) from any
        G.add_task(torch.Generator().manual_seed(0) if placeholder else self.ctx.side_stream("cmc", G.n_tasks))

    @classmethod
    def generator_from_checkpoints(cls, cfg, load, after, task):
        G = cls.build_generator(cfg)
        gen = torch.Generator().manual_seed(0)  # placeholders: the saved tensors replace them
        while G.n_tasks <= after:
            G.add_task(gen)
        G.load_state_dict(load(after))
        return TaskView(G, task)

    def eval_generator(self, t):
        return TaskView(self.ctx.G, t)

    def memory(self):
        convs = self.ctx.G.convs()
        norms = [m for m in self.ctx.G.layers() if isinstance(m, TaskNorm)]
        return {
            "atoms": sum(tensor_bytes(list(m.atoms)) for m in convs),
            "coefficients": sum(tensor_bytes(list(m.coef)) for m in convs),
            "task_biases_norms": sum(tensor_bytes(list(m.bias)[1:]) for m in convs)
            + sum(tensor_bytes(list(n.parameters()) + list(n.buffers())) for m in norms for n in m.norms[1:]),
        }
