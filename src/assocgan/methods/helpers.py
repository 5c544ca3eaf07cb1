"""Pieces that several methods share."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

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
