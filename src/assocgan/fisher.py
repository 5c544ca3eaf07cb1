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
    return per_sample_fisher(model, lambda call, xi, yi: per_sample_content_loss(call(xi), yi[None])[0], x, y, chunk=chunk)


class Stored8bit:
    """A tensor kept in 8 bits: ``linear`` (int8, symmetric, one scale per tensor) for weights, or ``log`` (uint8
    codes of log(value) between the tensor's smallest and largest positive values) for non-negative
    importances that span many orders of magnitude. ``nbytes`` counts the codes and the two float32 numbers."""

    def __init__(self, value: torch.Tensor, kind: str):
        self.kind, self.shape = kind, value.shape
        v = value.detach().float()
        if kind == "linear":
            self.lo, self.hi = 0.0, float(v.abs().max().clamp_min(1e-12)) / 127
            self.codes = torch.round(v / self.hi).clamp(-127, 127).to(torch.int8)
        else:
            pos = v[v > 0]
            self.lo = float(pos.min().log()) if pos.numel() else 0.0
            self.hi = float(pos.max().log()) if pos.numel() else 0.0
            span = max(self.hi - self.lo, 1e-6)
            codes = torch.round((v.clamp_min(1e-38).log() - self.lo) / span * 254) + 1
            self.codes = torch.where(v > 0, codes.clamp(1, 255), torch.zeros_like(codes)).to(torch.uint8)

    def float(self) -> torch.Tensor:
        if self.kind == "linear":
            return self.codes.float() * self.hi
        span = max(self.hi - self.lo, 1e-6)
        vals = torch.exp(self.lo + (self.codes.float() - 1) / 254 * span)
        return torch.where(self.codes > 0, vals, torch.zeros_like(vals))

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 8

    def state_dict(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi, "codes": self.codes, "shape": list(self.shape)}

    @classmethod
    def from_state(cls, state: dict) -> "Stored8bit":
        obj = cls.__new__(cls)
        obj.kind, obj.lo, obj.hi, obj.codes, obj.shape = state["kind"], state["lo"], state["hi"], state["codes"], torch.Size(state["shape"])
        return obj


class QuadraticAnchor:
    """Keeps anchor weights theta* and an importance per weight; penalty = 0.5 * sum(F * (theta - theta*)^2).

    Between tasks both are stored compactly and counted as memory: with ``storage="half"`` theta* in float16
    and the importance in bfloat16 (its values span many orders of magnitude; bfloat16 keeps float32's range),
    4 bytes a weight; with ``storage="8bit"`` theta* in int8 and the importance as 8-bit log codes, 2 bytes a
    weight. Several tasks combine as online EWC: F <- decay * F_old + F_new, and theta* moves to the newest
    weights. The penalty uses float32 working copies derived from the stored tensors.
    """

    def __init__(self, decay: float = 1.0, storage: str = "half"):
        if storage not in ("half", "8bit"):
            raise ValueError(f"storage must be 'half' or '8bit', got {storage!r}")
        self.decay = decay
        self.storage = storage
        self.stored_theta: dict[str, torch.Tensor | Stored8bit] = {}
        self.stored_importance: dict[str, torch.Tensor | Stored8bit] = {}
        self._work: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None  # params, theta*, F

    @property
    def active(self) -> bool:
        return bool(self.stored_theta)

    def _store(self, v: torch.Tensor, importance: bool):
        if self.storage == "8bit":
            return Stored8bit(v, "log" if importance else "linear")
        return v.detach().to(torch.bfloat16 if importance else torch.float16).clone()

    def update(self, model: nn.Module, importance: dict[str, torch.Tensor]) -> None:
        """Anchor at the model's current weights and fold in a new importance estimate."""
        combined = {}
        for k, f in importance.items():
            old = self.stored_importance.get(k)
            combined[k] = f.float() if old is None else self.decay * old.float() + f.float()
        self.stored_importance = {k: self._store(v, True) for k, v in combined.items()}
        self.stored_theta = {k: self._store(p, False) for k, p in model.named_parameters() if k in importance}
        self.bind(model)

    def bind(self, model: nn.Module) -> None:
        """Prepare float32 working copies, derived from the stored tensors, for the penalty on ``model``."""
        params = dict(model.named_parameters())
        keys = list(self.stored_theta)
        self._work = ([params[k] for k in keys], [self.stored_theta[k].float() for k in keys], [self.stored_importance[k].float() for k in keys])

    def state_dict(self) -> dict:
        def save(v):
            return v.state_dict() if isinstance(v, Stored8bit) else v

        return {"theta": {k: save(v) for k, v in self.stored_theta.items()}, "importance": {k: save(v) for k, v in self.stored_importance.items()}}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        """Restore ``state_dict()``'s anchor and bind it to ``model`` (whose weights may be loaded afterwards, in place)."""
        def load(v):
            return Stored8bit.from_state(v) if isinstance(v, dict) else v

        self.stored_theta = {k: load(v) for k, v in state["theta"].items()}
        self.stored_importance = {k: load(v) for k, v in state["importance"].items()}
        self._work = None
        if self.stored_theta:
            self.bind(model)

    def penalty(self) -> torch.Tensor | None:
        """0.5 * sum F (theta - theta*)^2, or None before the first anchor; differentiable in the weights."""
        if self._work is None or not self._work[0]:
            return None
        params, thetas, importances = self._work
        return _QuadraticPenalty.apply(thetas, importances, *params)

    def memory_bytes(self) -> int:
        stored = list(self.stored_theta.values()) + list(self.stored_importance.values())
        return sum(v.nbytes if isinstance(v, Stored8bit) else tensor_bytes(v) for v in stored)


class _QuadraticPenalty(torch.autograd.Function):
    """0.5 * sum F (theta - theta*)^2 over a list of weight tensors, with its gradient F (theta - theta*) given
    directly: three fused list operations a step instead of an autograd graph of four operations per tensor."""

    @staticmethod
    def forward(ctx, thetas, importances, *params):
        diff = torch._foreach_sub([p.detach() for p in params], thetas)
        weighted = torch._foreach_mul(diff, importances)
        ctx.save_for_backward(*weighted)
        value = sum(torch.dot(w.flatten(), d.flatten()) for w, d in zip(weighted, diff))
        return 0.5 * value

    @staticmethod
    def backward(ctx, grad_out):
        return (None, None, *torch._foreach_mul(list(ctx.saved_tensors), grad_out))


def per_sample_fisher(
    model: nn.Module, loss_one: Callable[..., torch.Tensor], *data: torch.Tensor, chunk: int = 16
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of an arbitrary per-sample loss: the mean over samples of the squared gradient,
    for each trainable parameter of ``model``.

    ``loss_one(call, *sample)`` gets one sample (each tensor of ``data`` without its batch dimension) and
    ``call``, which runs ``model`` at the differentiated weights on inputs given without a batch dimension
    (it adds one). It returns a scalar, e.g. the discriminator's GAN loss of one real or generated pair.
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def one(p, *sample):
        def call(*inputs):
            return functional_call(model, (p, buffers), tuple(t[None] for t in inputs))

        return loss_one(call, *sample)

    g_fn = vmap(grad(one), in_dims=(None,) + (0,) * len(data))
    n = data[0].shape[0]
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    was_training = model.training
    model.eval()
    try:
        for i in range(0, n, chunk):
            grads = g_fn(params, *(d[i : i + chunk] for d in data))
            for k, g in grads.items():
                fisher[k] += g.pow(2).sum(0)
    finally:
        model.train(was_training)
    return {k: f / n for k, f in fisher.items()}


def content_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 16) -> tuple[dict[str, torch.Tensor], float]:
    """The diagonal Fisher of ``diagonal_fisher`` rescaled to the curvature of the mean content loss, and that loss.

    For per-pixel residuals of variance ``mse`` the empirical Fisher of the per-sample mean squared error over
    ``P`` values is ``4 mse / P^2 * sum_p J_p^2`` while the (Gauss-Newton) curvature of the same loss is
    ``2 / P * sum_p J_p^2``; so ``F * P / (2 mse)`` estimates the curvature, and ``0.5 * sum H (theta - theta*)^2``
    estimates how much the content loss on these samples rises when the weights move away from theta*.
    A quadratic penalty built on it is in the units of the content loss, whatever the image size.
    """
    fisher = diagonal_fisher(model, x, y, chunk=chunk)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mse = float(sum(per_sample_content_loss(model(x[i : i + chunk]), y[i : i + chunk]).sum() for i in range(0, x.shape[0], chunk)) / x.shape[0])
    finally:
        model.train(was_training)
    scale = y[0].numel() / (2 * max(mse, 1e-8))
    return {k: f * scale for k, f in fisher.items()}, mse
