"""The curvature of a network's loss in its weights and the quadratic (EWC-style) anchor built on it.

Every quadratic penalty here (Assoc-GAN's distillation, CLGAN, Thanh-Tung & Tran) weighs the change of each
weight by one curvature, ``gauss_newton_diagonal``: the diagonal of the Gauss-Newton matrix of the loss the
penalty protects, ``H_k = mean_n sum_v c_nv J_nvk^2`` (``J_nv`` the gradient of sample n's output value v, ``c``
the loss's second derivative in that output: ``2 / P`` for the content MSE over P values). It is the expected
Fisher of the likelihood the loss stands for (Martens 2020), estimated with Hutchinson probes: one backward
pass per sample and probe through per-sample gradients (torch.func's vmap of grad, in chunks). The penalty
``lambda * 0.5 * sum H (theta - theta*)^2`` at ``lambda = 1`` is then the second-order (Laplace) estimate of
the protected loss's rise, in the units of the loss, at any image size.

*Why not the empirical Fisher.* EWC's usual estimate, the mean squared gradient of each sample's loss, grows with
the residuals; calibrated as ``F * P / (2 mse)`` it equals H only when a sample's pixel residuals are
independent. An image's residuals are correlated, and it overstated the loss rise of a trained generator by an
order of magnitude or more (up to 324 times on tones3, where H predicts it within 1.24x: ``python
benchmarks/curvature.py``; docs/results.md, "The quadratic penalties in the units of the loss"). A weight chosen
in the earlier units is therefore not the same weight now.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from .losses import per_sample_mse
from .memory import tensor_bytes

per_sample_content_loss = per_sample_mse  # the per-sample content loss whose gradient defines the Fisher


class LogCodes:
    """A non-negative tensor (an importance, spanning many orders of magnitude) kept as ``bits``-bit codes (8 or
    4; two 4-bit codes share a byte) of its logarithm between its smallest positive value (with 4 bits, at least a
    millionth of the largest: smaller ones become zero, 1e-6 of what the largest weighs) and its largest; code 0
    is zero. A code decodes to the mean of its bin (values spread evenly in log), so that sums over many weights
    keep their size. ``nbytes`` counts the packed codes and the two float32 bounds."""

    FLOOR_4BIT = math.log(1e-6)

    def __init__(self, value: torch.Tensor, bits: int = 8):
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.shape, self.bits, self.numel = value.shape, bits, value.numel()
        v = value.detach().float().flatten()
        pos = v[v > 0]
        self.lo = float(pos.min().log()) if pos.numel() else 0.0
        self.hi = float(pos.max().log()) if pos.numel() else 0.0
        if bits == 4:
            self.lo = max(self.lo, self.hi + self.FLOOR_4BIT)
        top = 2**bits - 1
        codes = torch.round((v.clamp_min(1e-38).log() - self.lo) / self._step()) + 1
        keep = v >= math.exp(self.lo) * (1 - 1e-6)
        codes = torch.where(keep, codes.clamp(1, top), torch.zeros_like(codes)).to(torch.uint8)
        if bits == 4:
            codes = torch.cat([codes, codes.new_zeros(codes.numel() % 2)])
            codes = codes[0::2] << 4 | codes[1::2]
        self.codes = codes

    def _step(self) -> float:
        return max(self.hi - self.lo, 1e-6) / (2**self.bits - 2)

    def float(self) -> torch.Tensor:
        codes = self.codes
        if self.bits == 4:
            codes = torch.stack([codes >> 4, codes & 15], 1).flatten()[: self.numel]
        h = self._step() / 2
        bin_mean = math.sinh(h) / h if h > 1e-6 else 1.0  # the mean of exp over a bin of half-width h, log-uniform
        vals = torch.exp(self.lo + (codes.float() - 1) * self._step()) * bin_mean
        return torch.where(codes > 0, vals, torch.zeros_like(vals)).view(self.shape)

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 8

    def state_dict(self) -> dict:
        return {"bits": self.bits, "lo": self.lo, "hi": self.hi, "codes": self.codes, "shape": list(self.shape)}

    @classmethod
    def from_state(cls, state: dict) -> LogCodes:
        obj = cls.__new__(cls)
        obj.bits, obj.lo, obj.hi, obj.codes, obj.shape = state["bits"], state["lo"], state["hi"], state["codes"], torch.Size(state["shape"])
        obj.numel = math.prod(obj.shape)
        return obj


class QuadraticAnchor:
    """Keeps anchor weights theta* and an importance per weight; penalty = 0.5 * sum(F * (theta - theta*)^2).

    Between tasks both are stored compactly and counted as memory: theta* in float16 (so that the penalty at the
    weights it was taken from is zero to within float16's rounding) and the importance in bfloat16
    (``storage="half"``, 4 bytes a weight; its values span many orders of magnitude, which bfloat16's range
    keeps), or as codes of its logarithm, 8 bits (``"8bit"``, 3 bytes a weight) or 4 (``"compact"``, 2.5 bytes a
    weight; an importance is a rough estimate to begin with, and 15 levels over its range keep the penalty's
    size: see the tests). Several tasks combine as online EWC: F <- decay * F_old + F_new, and theta* moves to
    the newest weights. The penalty uses float32 working copies derived from the stored tensors.

    With ``keep`` < 1 the anchor is sparse: the smallest importances that together hold at most ``1 - keep`` of
    the total are set to zero, and theta* is kept (in float16) only for the weights whose importance is not
    zero; the importance codes say which. A generator's diagonal Fisher is concentrated in few weights
    (docs/results.md, "The quadratic penalties in the units of the loss", "What the anchor keeps"), so
    ``keep=0.9999`` stores theta* for a small share of the weights and the penalty loses at most about 1e-4 of its
    size for a drift spread evenly over the weights.
    """

    STORAGES = {"compact": 4, "8bit": 8, "half": 16}  # bits of the importance

    def __init__(self, decay: float = 1.0, storage: str = "half", keep: float = 1.0):
        if storage not in self.STORAGES:
            raise ValueError(f"storage must be one of {', '.join(self.STORAGES)}, got {storage!r}")
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        self.decay = decay
        self.storage = storage
        self.keep = keep
        self.stored_theta: dict[str, torch.Tensor] = {}
        self.stored_importance: dict[str, torch.Tensor | LogCodes] = {}
        self._work: tuple | None = None  # params, theta*, F (and, when sparse, the flat indices of the kept weights)

    @property
    def active(self) -> bool:
        return bool(self.stored_theta)

    def _store(self, v: torch.Tensor, importance: bool):
        if not importance:
            return v.detach().to(torch.float16).clone()
        if self.storage == "half":
            return v.detach().to(torch.bfloat16).clone()
        return LogCodes(v, self.STORAGES[self.storage])

    def update(self, model: nn.Module, importance: dict[str, torch.Tensor]) -> None:
        """Anchor at the model's current weights and fold in a new importance estimate."""
        combined = {}
        for k, f in importance.items():
            old = self.stored_importance.get(k)
            combined[k] = f.float() if old is None else self.decay * old.float() + f.float()
        combined = self._prune(combined)
        self.stored_importance = {k: self._store(v, True) for k, v in combined.items()}
        params = dict(model.named_parameters())
        self.stored_theta = {k: self._store(self._kept(params[k].detach(), k), False) for k in combined}
        self.bind(model)

    @property
    def sparse(self) -> bool:
        return self.keep < 1

    def _prune(self, importance: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero the smallest importances that hold together at most ``1 - keep`` of their total."""
        if not self.sparse:
            return importance
        flat = torch.cat([v.flatten() for v in importance.values()]).double()
        ascending = flat.sort().values
        dropped = int((ascending.cumsum(0) <= (1 - self.keep) * float(ascending.sum())).sum())
        if dropped == 0:
            return importance
        threshold = float(ascending[min(dropped, len(ascending) - 1)])
        return {k: torch.where(v >= threshold, v, torch.zeros_like(v)) for k, v in importance.items()}

    def _mask(self, key: str) -> torch.Tensor:
        """The weights of ``key`` whose theta* is kept: those of non-zero stored importance (all when dense)."""
        return self.stored_importance[key].float() > 0

    def _kept(self, value: torch.Tensor, key: str) -> torch.Tensor:
        return value[self._mask(key)] if self.sparse else value

    def bind(self, model: nn.Module) -> None:
        """Prepare float32 working copies, derived from the stored tensors, for the penalty on ``model``."""
        params = dict(model.named_parameters())
        keys = list(self.stored_theta)
        bound = [params[k] for k in keys]
        thetas = [self.stored_theta[k].float().to(p.device) for k, p in zip(keys, bound)]
        importances = [self.stored_importance[k].float().to(p.device) for k, p in zip(keys, bound)]
        if not self.sparse:
            self._work = (bound, thetas, importances)
            return
        # the penalty reads only the weights that keep a theta*: the same value and gradient, fewer reads
        index = [f.flatten().nonzero().squeeze(1) for f in importances]
        self._work = (bound, thetas, [f.flatten()[i] for f, i in zip(importances, index)], index)

    def state_dict(self) -> dict:
        def save(v):
            return v.state_dict() if isinstance(v, LogCodes) else v

        return {"theta": {k: save(v) for k, v in self.stored_theta.items()}, "importance": {k: save(v) for k, v in self.stored_importance.items()}}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        """Restore ``state_dict()``'s anchor and bind it to ``model`` (whose weights may be loaded afterwards, in place)."""

        def load(v):
            return LogCodes.from_state(v) if isinstance(v, dict) else v

        self.stored_theta = {k: load(v) for k, v in state["theta"].items()}
        self.stored_importance = {k: load(v) for k, v in state["importance"].items()}
        self._work = None
        if self.stored_theta:
            self.bind(model)

    def penalty(self) -> torch.Tensor | None:
        """0.5 * sum F (theta - theta*)^2, or None before the first anchor; differentiable in the weights."""
        if self._work is None or not self._work[0]:
            return None
        if self.sparse:
            params, thetas, importances, index = self._work
            return _SparseQuadraticPenalty.apply(thetas, importances, index, *params)
        params, thetas, importances = self._work
        return _QuadraticPenalty.apply(thetas, importances, *params)

    def memory_bytes(self) -> int:
        stored = list(self.stored_theta.values()) + list(self.stored_importance.values())
        return sum(v.nbytes if isinstance(v, LogCodes) else tensor_bytes(v) for v in stored)


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


class _SparseQuadraticPenalty(torch.autograd.Function):
    """``_QuadraticPenalty`` over the listed weights of each tensor only (flat indices ``index``): the others have
    no importance, so the value and the gradient are those of the dense penalty."""

    @staticmethod
    def forward(ctx, thetas, importances, index, *params):
        diff = torch._foreach_sub([p.detach().flatten()[i] for p, i in zip(params, index)], thetas)
        weighted = torch._foreach_mul(diff, importances)
        ctx.index, ctx.shapes = index, [p.shape for p in params]
        ctx.save_for_backward(*weighted)
        value = sum(torch.dot(w, d) for w, d in zip(weighted, diff))
        return 0.5 * value

    @staticmethod
    def backward(ctx, grad_out):
        grads = []
        for w, i, shape in zip(ctx.saved_tensors, ctx.index, ctx.shapes):
            g = w.new_zeros(shape.numel())
            g[i] = w * grad_out
            grads.append(g.view(shape))
        return (None, None, None, *grads)


def per_sample_fisher(model: nn.Module, loss_one: Callable[..., torch.Tensor], *data: torch.Tensor, chunk: int = 16) -> dict[str, torch.Tensor]:
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


def gauss_newton_diagonal(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    output_curvature: Callable[[torch.Tensor], torch.Tensor] | float,
    gen: torch.Generator,
    probes: int = 1,
    chunk: int = 16,
) -> dict[str, torch.Tensor]:
    """The one curvature of every quadratic penalty: the diagonal of the (generalised) Gauss-Newton matrix of the
    mean over samples of a loss ``l(model(*inputs))`` whose second derivative in each output value is
    ``output_curvature`` (a number, or a function of the outputs giving one per value):
    ``H_k = mean_n sum_v c_nv J_nvk^2``, with ``J_nv`` the gradient of sample n's output value v.

    ``sum_v c_v J_vk^2`` is estimated with Hutchinson probes, as ``E_r[(J^T r)_k^2]`` for ``r_v = sqrt(c_v) eps_v``
    and ``eps`` Rademacher signs drawn from ``gen``: one backward pass per sample and probe, whatever the
    number of output values, and exact in expectation. Unlike the empirical Fisher (squared gradients of the
    loss itself, whose residuals are correlated across an image's pixels), it does not depend on the residuals
    at all, so ``0.5 * sum H (theta - theta*)^2`` predicts the loss rise of a small change of the weights: a
    penalty weight of 1 is the plain second-order (Laplace) estimate, in the units of the loss, at any image
    size (docs/methods.md, "The quadratic penalties' curvature"). For a mean squared error over P values
    ``c = 2 / P``; for a mean binary cross-entropy on logits ``c = s (1 - s) / P``, s the sigmoid of the logit.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.cat([model(*(t[i : i + chunk] for t in inputs)).float() for i in range(0, inputs[0].shape[0], chunk)])
    finally:
        model.train(was_training)
    c = output_curvature(out) if callable(output_curvature) else torch.full_like(out, float(output_curvature))
    root = c.clamp_min(0).sqrt()
    total: dict[str, torch.Tensor] | None = None
    for _ in range(probes):
        signs = torch.randint(0, 2, out.shape, generator=gen, device=gen.device).to(out.device, out.dtype) * 2 - 1
        probe = root * signs
        sq = per_sample_fisher(model, lambda call, *s: (call(*s[:-1]).float() * s[-1][None]).sum(), *inputs, probe, chunk=chunk)
        total = sq if total is None else {k: total[k] + v for k, v in sq.items()}
    return {k: v / probes for k, v in total.items()}


def content_curvature(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, probes: int = 1, chunk: int = 16
) -> tuple[dict[str, torch.Tensor], float]:
    """The curvature of the mean content loss (the MSE over an image's P values) on (x, y) at the model's
    weights, ``gauss_newton_diagonal`` with ``c = 2 / P``, and that loss."""
    curvature = gauss_newton_diagonal(model, (x,), 2.0 / y[0].numel(), gen, probes=probes, chunk=chunk)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mse = float(sum(per_sample_content_loss(model(x[i : i + chunk]), y[i : i + chunk]).sum() for i in range(0, x.shape[0], chunk)) / x.shape[0])
    finally:
        model.train(was_training)
    return curvature, mse


def predicted_and_measured_rise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    curvatures: dict[str, dict[str, torch.Tensor]],
    gen: torch.Generator,
    draws: int = 6,
    scale: float = 0.01,
) -> tuple[float, dict[str, float]]:
    """How much the content loss on (x, y) rises when the weights move by small random steps, measured and as
    each curvature of ``curvatures`` predicts it (``0.5 * sum H delta^2``), summed over ``draws`` steps. Each
    weight's step is drawn with a spread of ``scale`` times its tensor's mean magnitude; the loss is taken at
    theta + delta and theta - delta and averaged, which cancels the gradient's share. The weights are restored."""
    from .losses import content_loss

    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    theta = {k: p.detach().clone() for k, p in params.items()}

    def loss_at(delta: dict[str, torch.Tensor] | None, sign: float) -> float:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(theta[k] if delta is None else theta[k] + sign * delta[k])
            return float(content_loss(model(x), y))

    try:
        base = loss_at(None, 1)
        rise, predicted = 0.0, {name: 0.0 for name in curvatures}
        for _ in range(draws):
            delta = {k: scale * (v.abs().mean() + 1e-3) * torch.randn(v.shape, generator=gen) for k, v in theta.items()}
            rise += 0.5 * (loss_at(delta, 1) + loss_at(delta, -1)) - base
            for name, H in curvatures.items():
                predicted[name] += 0.5 * sum(float((H[k] * d.pow(2)).sum()) for k, d in delta.items() if k in H)
    finally:
        loss_at(None, 1)
        model.train(was_training)
    return rise, predicted
