"""Pieces that several methods share."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..memory import module_bytes, tensor_bytes


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

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.stored.state_dict()

    @classmethod
    def restore(cls, template: nn.Module, state: dict[str, torch.Tensor] | None, dtype: torch.dtype = torch.float16) -> FrozenTeacher | None:
        """A teacher of ``template``'s structure holding the saved ``state`` (None for None)."""
        if state is None:
            return None
        teacher = cls(template, dtype)
        teacher.stored.load_state_dict(state)
        teacher.model = copy.deepcopy(teacher.stored).float().eval()
        return teacher


class PathIntegral:
    """Online importance of a network's weights by the path integral of synaptic intelligence (Zenke et al., 2017).

    At each optimiser step of the network, ``record()`` takes the gradient of the loss the importance is about
    (the unregularised loss: call it before a penalty's gradient joins ``.grad``) and ``accumulate()``, after
    the update, adds each weight's share of the loss decrease, ``omega += -g * (theta - theta_before)``.
    ``consolidate()`` closes a segment and returns its importance ``2 max(omega, 0) / ((theta - theta_start)^2 +
    damping)``, then starts the next segment at the current weights. On a quadratic loss ``h/2 (theta -
    theta_opt)^2`` walked to its minimum, omega is ``h/2 delta^2``: the importance is the curvature ``h``, the
    unit of ``fisher.QuadraticAnchor``'s ``0.5 * sum H (theta - theta*)^2`` (so the penalty at weight 1 is
    Zenke et al.'s ``c * sum Omega (theta - theta*)^2`` at c = 1). The per-step state (omega, the recorded
    gradient and two copies of the weights, float32) is working memory of the running segment.
    """

    def __init__(self, model: nn.Module, damping: float = 1e-3):
        self.damping = damping
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self.omega = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in self.params.items()}
        self.grad = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in self.params.items()}
        self.start = {k: p.detach().float().clone() for k, p in self.params.items()}
        self.prev = {k: p.detach().float().clone() for k, p in self.params.items()}

    @torch.no_grad()
    def record(self) -> None:
        for k, p in self.params.items():
            if p.grad is None:
                self.grad[k].zero_()
            else:
                self.grad[k].copy_(p.grad)

    @torch.no_grad()
    def accumulate(self) -> None:
        for k, p in self.params.items():
            now = p.detach().float()
            self.omega[k].add_(-self.grad[k] * (now - self.prev[k]))
            self.prev[k].copy_(now)

    @torch.no_grad()
    def consolidate(self) -> dict[str, torch.Tensor]:
        importance = {}
        for k, p in self.params.items():
            now = p.detach().float()
            importance[k] = 2 * self.omega[k].clamp(min=0) / ((now - self.start[k]).pow(2) + self.damping)
            self.omega[k].zero_()
            self.start[k].copy_(now)
            self.prev[k].copy_(now)
        return importance

    def memory_bytes(self) -> int:
        return tensor_bytes(self.omega) + tensor_bytes(self.grad) + tensor_bytes(self.start) + tensor_bytes(self.prev)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"omega": self.omega, "grad": self.grad, "start": self.start, "prev": self.prev}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for key in ("omega", "grad", "start", "prev"):
            for k, v in getattr(self, key).items():
                v.copy_(state[key][k])


class KeepsPreviousGenerator:
    """For a method that distils from the generator as it stood after the last task (LwF, Lifelong GAN): after
    each task that generator becomes ``self.teacher`` (a ``FrozenTeacher``, float16); it is saved with the
    training state and counted as the method's memory. Placed before ``Method`` among the bases."""

    teacher: FrozenTeacher | None = None

    def after_task(self, t, task):
        self.teacher = FrozenTeacher(self.ctx.G)

    def state_dict(self):
        return {"teacher": None if self.teacher is None else self.teacher.state_dict()}

    def load_state_dict(self, state, seen):
        self.teacher = FrozenTeacher.restore(self.ctx.G, state["teacher"])

    def memory(self):
        return {"teacher": self.teacher.memory_bytes()} if self.teacher is not None else {}


class TaskState:
    """Which task's weights the layers of one per-task network use: one object shared by all its layers."""

    def __init__(self, t: int = 0) -> None:
        self.t = t


class TaskNorm(nn.Module):
    """A normalisation layer with its own parameters (and running statistics) per task."""

    def __init__(self, norm: nn.Module, state: TaskState):
        super().__init__()
        self.state = state
        self.norms = nn.ModuleList([norm])

    @property
    def n_tasks(self) -> int:
        return len(self.norms)

    def add_task(self, gen: torch.Generator | None = None) -> None:
        """Task ``n_tasks`` starts from the newest task's normalisation (``gen``, for the layers that draw, is unused)."""
        self.norms.append(copy.deepcopy(self.norms[-1]))

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return list(self.norms[t].parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.state.t](x)


class PerTaskNet(nn.Module):
    """A generator ``net`` whose layers keep weights per task (PiggybackGAN, LoRA, CMC): ``wrap`` replaces every
    layer that ``make`` turns into a per-task one, all sharing one ``TaskState``; ``task`` says whose weights run.
    ``layer_types`` are the per-task layers' classes."""

    layer_types: tuple[type[nn.Module], ...] = ()

    def __init__(self, net: nn.Module, first: int = 0):
        super().__init__()
        self.state = TaskState(first)
        self.net = net

    def wrap(self, make, module: nn.Module | None = None) -> None:
        """Replace each child of ``module`` (the generator, by default) for which ``make(child)`` returns a module;
        look inside the others."""
        for name, child in list((self.net if module is None else module).named_children()):
            made = make(child)
            if made is not None:
                (self.net if module is None else module)._modules[name] = made
            else:
                self.wrap(make, child)

    def layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, self.layer_types)]

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        """What task ``t`` trains: each per-task layer's own parameters for it."""
        return [p for m in self.layers() for p in m.task_parameters(t)]

    @property
    def task(self) -> int:
        return self.state.t

    @task.setter
    def task(self, t: int) -> None:
        self.state.t = t

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.net(*args, **kwargs)


class TaskView(nn.Module):
    """A per-task network answering as task ``t`` (whatever task it is set to otherwise)."""

    def __init__(self, net: PerTaskNet, t: int):
        super().__init__()
        self.net, self.t = net, t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self.net.task
        self.net.task = self.t
        try:
            return self.net(x)
        finally:
            self.net.task = before


class TrainsTaskWeights:
    """For a method whose generator is a ``PerTaskNet`` that gains weights per task (PiggybackGAN, CMC): before
    task t the network grows to task t (``grow``, once per task added) and only task t's weights train; after it,
    all of it is frozen. The training state holds the number of tasks, the task running and the parameters that
    train. Placed before ``Method`` among the bases."""

    def grow(self, G: PerTaskNet, placeholder: bool) -> None:
        """Add the next task's weights to ``G`` (``placeholder``: their values are replaced by saved tensors)."""
        raise NotImplementedError

    def before_task(self, t, task):
        G = self.ctx.G
        while G.n_tasks <= t:
            self.grow(G, placeholder=False)
        G.task = t
        for p in G.parameters():
            p.requires_grad_(False)
        for p in G.task_parameters(t):
            p.requires_grad_(True)

    def g_parameters(self):
        return self.ctx.G.task_parameters(self.ctx.G.task)

    def after_task(self, t, task):
        for p in self.ctx.G.parameters():  # all of it is frozen now; the next task adds its own
            p.requires_grad_(False)

    def state_dict(self):
        G = self.ctx.G
        return {"n_tasks": G.n_tasks, "task": G.task, "trainable": [k for k, p in G.named_parameters() if p.requires_grad]}

    def load_state_dict(self, state, seen):
        G = self.ctx.G
        while G.n_tasks < state["n_tasks"]:
            self.grow(G, placeholder=True)
        G.task = state["task"]
        trainable = set(state["trainable"])
        for k, p in G.named_parameters():
            p.requires_grad_(k in trainable)


def convolve(layer: nn.Module, x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x`` through the (transposed) convolution ``layer`` stands for (its ``transposed``, ``stride``, ``padding``,
    ``output_padding``, ``groups``, ``dilation``) with ``filters`` kept filter-major, (out, in, kh, kw), for both kinds."""
    if layer.transposed:
        return F.conv_transpose2d(x, filters.transpose(0, 1), bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    return F.conv2d(x, filters, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
