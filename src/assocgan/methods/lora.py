"""LoRA adapters (Hu et al., ICLR 2022): per-task low-rank updates of a generator frozen after task 1.

*Original.* LoRA freezes a pretrained network and learns, for each downstream task, a low-rank update of some
of its weight matrices: ``W' = W + (alpha / r) B A`` with ``A`` (r x in) drawn at random, ``B`` (out x r) starting
at zero (so the task starts at the pretrained network), and only ``A`` and ``B`` trained. A task keeps only its
``A`` and ``B``; the pretrained weights are shared and never change, and the task's identity chooses the update
at test time. The paper adapts the attention projections of transformers.

*Here.* The generator trains fully on task 1 (``--lora-full-first on``, the default) and is frozen from then on:
every parameter and buffer of it stays bit for bit as task 1 left it. Each later task t trains only its own
adapters, one pair per convolution and transposed convolution of the generator: with the kernel written
filter-major as a matrix W of shape ``C_out x (C_in k k)`` (a transposed convolution's kernel is transposed to
that), task t's kernel is

    W_t = W + (alpha / r) * reshape(B_t A_t),   A_t: r x (C_in k k),   B_t: C_out x r,

``B_t`` zero at the task's start (its first step starts from the frozen generator, not from the previous task's
adapters) and ``A_t`` uniform in +-1/sqrt(C_in k k) (the reference implementation's Kaiming-uniform), drawn
from a side stream of its own for each task (``rng.side_stream(seed, "lora", t)``), so the run's stream sees
the same draws as every other method's. Biases, normalisation parameters, the global context (``--context``)
and the gated architecture's gate and colour stage are frozen with the rest: they are task 1's for every
task. Task j is answered by the frozen generator with task j's adapters (task 1: none), so a task's outputs
never change once it is learned (no forgetting, by construction); the method needs the task identity at test
(a task-incremental row, beside ``single`` and ``piggyback-ti``). The discriminator is shared and fine-tuned
as in TL. With ``--lora-full-first off`` the generator is never trained: it stays at the run's initial weights
and every task, the first included, gets its adapters on it.

*Departure.* LoRA was proposed for the linear layers of transformers; here it acts on convolution kernels
flattened to matrices, as LoRA for CNNs is commonly done (the rank bounds the update of the kernel matrix, not
of each spatial tap). ``--norm batch`` is refused: its running statistics would go on changing the frozen
generator in every later task's training.

*Budget.* Task t >= 2 (every task with ``--lora-full-first off``) keeps ``r (C_in k k + C_out)`` float32
parameters per convolution: at ``--ngf 64`` and r = 4 (the U-Net's 8 convolutions of 4x4 kernels) that is
r x 31,155 = 124,620 parameters, 498,480 bytes per task, 2.0% of the plain U-Net's 6.17 M parameters (at the smoke
preset's ``--ngf 8``: r x 3,939 = 15,756 per task, 16% of its 97,795). ``--lora-alpha`` defaults to 4, the default
r (scale 1), as the paper sets alpha to the first r it tries and does not tune it.

*Memory* counts the adapters kept, in bytes as stored (float32); the frozen generator is the generator every
method has and is not counted (as for TL and PiggybackGAN): zero after task 1 with the default, then one task's
adapters more after each task.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..memory import tensor_bytes
from .base import Method, Option
from .helpers import PerTaskNet, TaskState, TaskView


class LoraConv(nn.Module):
    """A (transposed) convolution ``base`` and a low-rank update of its kernel per adapted task."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, state: TaskState, rank: int, alpha: float):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("LoRA adapters support ungrouped convolutions only")
        self.base = conv
        self.state = state
        self.rank = rank
        self.scale = alpha / rank
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        w = conv.weight
        self.n_out = w.shape[1] if self.transposed else w.shape[0]
        self.fan_in = w.numel() // self.n_out  # C_in k k
        self.lora_A = nn.ParameterList()  # (r, C_in k k) per adapted task
        self.lora_B = nn.ParameterList()  # (C_out, r) per adapted task

    @property
    def n_adapters(self) -> int:
        return len(self.lora_A)

    def add_adapter(self, gen: torch.Generator) -> None:
        """The next task's adapter: ``A`` uniform in +-1/sqrt(fan_in) from ``gen``, ``B`` zero (no update yet)."""
        w = self.base.weight
        bound = 1.0 / math.sqrt(self.fan_in)
        a = (torch.rand(self.rank, self.fan_in, generator=gen, dtype=torch.float32) * 2 - 1) * bound
        self.lora_A.append(nn.Parameter(a.to(device=w.device, dtype=w.dtype)))
        self.lora_B.append(nn.Parameter(torch.zeros(self.n_out, self.rank, device=w.device, dtype=w.dtype)))

    def kernel(self, k: int) -> torch.Tensor:
        """The kernel with adapter ``k``'s update, in the base kernel's layout."""
        w = self.base.weight
        delta = (self.lora_B[k] @ self.lora_A[k]) * self.scale  # (C_out, C_in k k), filter-major
        if self.transposed:
            return w + delta.view(self.n_out, w.shape[0], *w.shape[2:]).transpose(0, 1)
        return w + delta.view(w.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.state.t
        if k < 0:
            return self.base(x)
        c = self.base
        if self.transposed:
            return F.conv_transpose2d(x, self.kernel(k), c.bias, c.stride, c.padding, c.output_padding, c.groups, c.dilation)
        return F.conv2d(x, self.kernel(k), c.bias, c.stride, c.padding, c.dilation, c.groups)


class LoraNet(PerTaskNet):
    """A generator whose convolutions carry per-task low-rank adapters; ``task`` is the adapter that runs (-1: none,
    the frozen generator alone)."""

    layer_types = (LoraConv,)

    def __init__(self, net: nn.Module, rank: int, alpha: float):
        super().__init__(net, first=-1)
        self.wrap(lambda child: LoraConv(child, self.state, rank, alpha) if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)) else None)

    @property
    def n_adapters(self) -> int:
        return self.layers()[0].n_adapters

    def add_adapter(self, gen: torch.Generator) -> None:
        for m in self.layers():
            m.add_adapter(gen)

    def adapter_parameters(self, k: int) -> list[nn.Parameter]:
        return [p for m in self.layers() for p in (m.lora_A[k], m.lora_B[k])]

    def base_parameters(self) -> list[nn.Parameter]:
        adapters = {id(p) for m in self.layers() for p in [*m.lora_A, *m.lora_B]}
        return [p for p in self.parameters() if id(p) not in adapters]


class Lora(Method):
    name = "lora"
    title = "LoRA adapters (Hu et al.)"
    cite = "Hu et al., ICLR 2022: per-task low-rank adapters on a frozen generator"
    needs_task_id = True
    options = (
        Option("lora_rank", 4, "rank r of each task's update of every convolution kernel", low=1),
        Option("lora_alpha", 4.0, "the update's scale is alpha / r", low=0, open_low=True),
        Option(
            "lora_full_first",
            True,
            "train the whole generator on task 1 and freeze it after (off: it stays at its initial weights and task 1 gets adapters too)",
        ),
    )

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        if cfg.norm == "batch":
            raise UserError(
                "method lora keeps the generator frozen after task 1, and batch normalisation's running statistics would go on "
                "changing it; give --norm instance or --norm none, or leave the method out"
            )

    @classmethod
    def build_generator(cls, cfg):
        opts = cls.resolve_options(cfg.method_options.get(cls.name, {}))
        return LoraNet(super().build_generator(cfg), opts["lora_rank"], opts["lora_alpha"])

    @classmethod
    def adapter_of(cls, t: int, full_first: bool) -> int:
        """The adapter that answers for task ``t`` (0-based): -1 for the fully trained first task."""
        return t - 1 if full_first else t

    def _adapter_of(self, t: int) -> int:
        return self.adapter_of(t, self.settings.lora_full_first)

    def before_task(self, t, task):
        G: LoraNet = self.ctx.G
        k = self._adapter_of(t)
        while G.n_adapters <= k:
            G.add_adapter(self.ctx.side_stream("lora", G.n_adapters + (1 if self.settings.lora_full_first else 0)))
        G.task = k
        for p in G.parameters():
            p.requires_grad_(False)
        for p in self.g_parameters():
            p.requires_grad_(True)

    def g_parameters(self):
        G: LoraNet = self.ctx.G
        return G.base_parameters() if G.task < 0 else G.adapter_parameters(G.task)

    def after_task(self, t, task):
        for p in self.ctx.G.parameters():  # all of it is frozen now; the next task adds its own adapters
            p.requires_grad_(False)

    def state_dict(self):
        G: LoraNet = self.ctx.G
        return {"n_adapters": G.n_adapters, "adapter": G.task, "trainable": [k for k, p in G.named_parameters() if p.requires_grad]}

    def load_state_dict(self, state, seen):
        G: LoraNet = self.ctx.G
        gen = torch.Generator().manual_seed(0)  # placeholders: G's saved tensors replace them right after
        while G.n_adapters < state["n_adapters"]:
            G.add_adapter(gen)
        G.task = state["adapter"]
        trainable = set(state["trainable"])
        for k, p in G.named_parameters():
            p.requires_grad_(k in trainable)

    @classmethod
    def generator_from_checkpoints(cls, cfg, load, after, task):
        full_first = cls.resolve_options(cfg.method_options.get(cls.name, {}))["lora_full_first"]
        G = cls.build_generator(cfg)
        gen = torch.Generator().manual_seed(0)  # placeholders: the saved tensors replace them
        while G.n_adapters <= cls.adapter_of(after, full_first):
            G.add_adapter(gen)
        G.load_state_dict(load(after))
        return TaskView(G, cls.adapter_of(task, full_first))

    def eval_generator(self, t):
        return TaskView(self.ctx.G, self._adapter_of(t))

    def memory(self):
        return {"adapters": sum(tensor_bytes([*m.lora_A, *m.lora_B]) for m in self.ctx.G.layers())}
