"""Thanh-Tung & Tran (2018/2020): EWC on the discriminator, so that it does not forget earlier generators.

*Original.* GAN training is read as a continual-learning problem for the discriminator: the generator's
distribution moves, and a discriminator that forgets the fakes of earlier generators lets the generator return
to them (oscillation, mode collapse). Every N steps the diagonal Fisher of the discriminator's weights is
re-estimated on real and generated samples; the estimates are summed with a discount, theta* follows the current
weights, and the discriminator's loss gains the EWC penalty ``lambda/2 * sum F (theta - theta*)^2``.

*Here.* The same regulariser on the conditional PatchGAN of paired translation, kept running across task
boundaries, so that the discriminator keeps recognising the real pairs and the generator's outputs of earlier
tasks. Every ``--thanh-every`` steps (counted over the whole run, so it starts within the first task, as in the
original), the current batch's real pairs (x, y) and generated pairs (x, G(x)) give per-sample gradients of the
discriminator's GAN loss (``fisher.per_sample_fisher``); the importance becomes ``gamma * F + F_new``
(``--thanh-gamma``) and theta* moves to the current weights (``fisher.QuadraticAnchor``). The penalty
``--thanh-lambda * 0.5 * sum F (theta - theta*)^2`` is added to the discriminator's loss. The generator is
touched only through the adversarial term, whose weight (``--lambda-adv``, 1e-3 by default) is small against the
content loss: the method protects what the discriminator knows, and the generator's forgetting changes little.
(The paper's Table 1 has [41] holding part of the old tasks, 20.95 dB final against TL's 14.03, and its section
4.3 counts [41] among the methods that revisit past training data; what is built here is the regulariser the
method is known for, EWC on the discriminator alone.) With ``--lambda-adv 0`` there is no discriminator and the
method refuses to run. The importance is the curvature of the discriminator's mean GAN loss by the one
curvature of every quadratic penalty here (``fisher.gauss_newton_diagonal``: the Gauss-Newton diagonal of the
mean over the patch outputs of LSGAN's squared residuals or of the vanilla loss's cross-entropies, the expected
Fisher of the original, estimated with Hutchinson probes from a random stream of the method's own), so
``--thanh-lambda 1`` is the second-order estimate of how much the discriminator's loss on the earlier pairs
rises. Measured figures: docs/results.md, "The paper's protocol (`--preset paper-quick`)" and "Every
method on restore4 (seed 0)".

*Memory kept:* the discriminator's theta* (float16) and importance (bfloat16), about 4 bytes a discriminator
weight (``memory_bytes``: ``anchor``); nothing of the generator.
"""

from __future__ import annotations

import torch

from ..fisher import QuadraticAnchor, gauss_newton_diagonal
from .base import Method, Option


def discriminator_fisher(D, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, mode: str, gen: torch.Generator, probes: int = 1) -> dict[str, torch.Tensor]:
    """The curvature of D's mean GAN loss over the real pairs (x, y) and the generated (x, fake):
    ``fisher.gauss_newton_diagonal`` of the loss's mean over the patch outputs, whose second derivative in each
    output is ``2 / values`` for LSGAN's squared residuals and ``s (1 - s) / values`` for the vanilla loss's
    cross-entropy on logits (s the sigmoid); the real and the generated pairs weigh half each."""

    def curvature(out: torch.Tensor) -> torch.Tensor:
        values = out[0].numel()
        if mode == "lsgan":
            return torch.full_like(out, 2.0 / values)
        s = torch.sigmoid(out)
        return s * (1 - s) / values

    real = gauss_newton_diagonal(D, (x, y), curvature, gen, probes)
    generated = gauss_newton_diagonal(D, (x, fake), curvature, gen, probes)
    return {k: 0.5 * (real[k] + generated[k]) for k in real}


class ThanhTung(Method):
    name = "thanh"
    title = "Thanh-Tung & Tran"
    cite = "Thanh-Tung & Tran 2018, On catastrophic forgetting and mode collapse in GANs [41]"
    options = (
        Option("thanh_lambda", 1.0, "weight of the EWC penalty on the discriminator (1: the Laplace estimate of its loss rise)", low=0),
        Option("thanh_every", 50, "re-estimate the discriminator's Fisher every this many steps", low=1),
        Option("thanh_gamma", 0.9, "discount of the earlier Fisher estimates at each re-estimate", low=0),
    )

    needs_discriminator = True

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.anchor = QuadraticAnchor(decay=self.settings.thanh_gamma)
        self.steps = 0

    def discriminator_loss(self, step):
        penalty = self.anchor.penalty()
        return None if penalty is None else self.settings.thanh_lambda * penalty

    def after_step(self, step):
        self.steps += 1
        if self.steps % self.settings.thanh_every:
            return
        gen = self.ctx.side_stream("thanh", self.steps)  # the probes change no draw of the run
        F = discriminator_fisher(self.ctx.D, step.x, step.y.float(), step.fake.detach().float(), self.ctx.cfg.gan_mode, gen)
        self.anchor.update(self.ctx.D, F)

    def state_dict(self):
        return {"anchor": self.anchor.state_dict(), "steps": self.steps}

    def load_state_dict(self, state, seen):
        self.anchor.load_state_dict(state["anchor"], self.ctx.D)
        self.steps = state["steps"]

    def memory(self):
        return {"anchor": self.anchor.memory_bytes()} if self.anchor.active else {}
