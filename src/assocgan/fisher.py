"""Diagonal empirical Fisher of a generator and the quadratic (EWC-style) anchor built on it.

The Fisher is the mean over samples of the squared per-sample gradient of the content loss (the negative
Gaussian log-likelihood of the target, up to scale), computed with torch.func (vmap of grad), in chunks.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from .memory import tensor_bytes


def per_sample_content_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample content loss whose gradient defines the Fisher: the mean squared error over pixels."""
    return (pred - target).pow(2).flatten(1).mean(1)


def diagonal_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 16) -> dict[str, torch.Tensor]:
    """Mean of squared per-sample gradients of ``per_sample_content_loss(model(x), y)`` for each trainable parameter."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi[None],))
        return per_sample_content_loss(out, yi[None])[0]

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    was_training = model.training
    model.eval()
    try:
        for i in range(0, x.shape[0], chunk):
            grads = g_fn(params, x[i : i + chunk], y[i : i + chunk])
            for k, g in grads.items():
                fisher[k] += g.pow(2).sum(0)
    finally:
        model.train(was_training)
    return {k: f / x.shape[0] for k, f in fisher.items()}


class QuadraticAnchor:
    """Keeps anchor weights theta* and an importance per weight; penalty = 0.5 * sum(F * (theta - theta*)^2).

    Between tasks theta* is stored in float16 and the importance in bfloat16 (its values span many orders of
    magnitude; bfloat16 keeps float32's range), and both are counted as memory. Several tasks combine as
    online EWC: F <- decay * F_old + F_new, and theta* moves to the newest weights.
    """

    theta_dtype = torch.float16
    importance_dtype = torch.bfloat16

    def __init__(self, decay: float = 1.0):
        self.decay = decay
        self.stored_theta: dict[str, torch.Tensor] = {}
        self.stored_importance: dict[str, torch.Tensor] = {}
        self._work: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def active(self) -> bool:
        return bool(self.stored_theta)

    def update(self, model: nn.Module, importance: dict[str, torch.Tensor]) -> None:
        """Anchor at the model's current weights and fold in a new importance estimate."""
        combined = {}
        for k, f in importance.items():
            old = self.stored_importance.get(k)
            combined[k] = f.float() if old is None else self.decay * old.float() + f.float()
        self.stored_importance = {k: v.to(self.importance_dtype) for k, v in combined.items()}
        self.stored_theta = {k: p.detach().to(self.theta_dtype).clone() for k, p in model.named_parameters() if k in importance}
        self.bind(model)

    def bind(self, model: nn.Module) -> None:
        """Prepare float32 working copies, derived from the stored tensors, for the penalty on ``model``."""
        params = dict(model.named_parameters())
        self._work = [(params[k], self.stored_theta[k].float(), self.stored_importance[k].float()) for k in self.stored_theta]

    def penalty(self) -> torch.Tensor | None:
        """0.5 * sum F (theta - theta*)^2, or None before the first anchor."""
        if not self._work:
            return None
        return 0.5 * sum((f * (p - t).pow(2)).sum() for p, t, f in self._work)

    def memory_bytes(self) -> int:
        return tensor_bytes(self.stored_theta) + tensor_bytes(self.stored_importance)
