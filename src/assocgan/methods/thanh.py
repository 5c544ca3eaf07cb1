"""Thanh-Tung & Tran (2018/2020): EWC on the discriminator, so that it does not forget earlier generators.

*Original.* GAN training is read as a continual-learning problem for the discriminator: the generator's
distribution moves, and a discriminator that forgets the fakes of earlier generators lets the generator
return to them (oscillation, mode collapse). Every N steps the diagonal Fisher of the discriminator's weights
is re-estimated on real and generated samples; the estimates are summed with a discount, theta* follows the
current weights, and the discriminator's loss gains the EWC penalty ``lambda/2 * sum F (theta - theta*)^2``.

*Here.* The same regulariser on the conditional PatchGAN of paired translation, kept running across task
boundaries, so that the discriminator keeps recognising the real pairs and the generator's outputs of earlier
tasks. Every ``--thanh-every`` steps (counted over the whole run, so it starts within the first task, as in the
original), the current batch's real pairs (x, y) and generated pairs (x, G(x)) give per-sample gradients of the
discriminator's GAN loss (``fisher.per_sample_fisher``); the importance becomes ``gamma * F + F_new``
(``--thanh-gamma``) and theta* moves to the current weights (``fisher.QuadraticAnchor``). The penalty
``--thanh-lambda * 0.5 * sum F (theta - theta*)^2`` is added to the discriminator's loss. The generator is
touched only through the adversarial term, whose weight (``--lambda-adv``, 1e-3 by default) is small against
the content loss: the method protects what the discriminator knows, and the generator's forgetting changes
little, as the paper's Table 1 finds for [41]. With ``--lambda-adv 0`` there is no discriminator and the method
is TL. The GAN loss's Fisher is not minute like the content loss's (it is not a mean over a few thousand
pixels of small residuals), so lambda is on the usual EWC scale; its default is measured so that the penalty
is a sizeable part of the discriminator's loss.

*Memory kept:* the discriminator's theta* (float16) and importance (bfloat16), about 4 bytes a
discriminator weight (``memory_bytes``: ``anchor``); nothing of the generator.
"""
from __future__ import annotations

import torch

from ..errors import UserError
from ..fisher import QuadraticAnchor, per_sample_fisher
from .base import Method, Option


def discriminator_fisher(D, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of D's per-sample GAN loss over the real pairs (x, y) and the generated (x, fake)."""
    from ..train import gan_loss  # the one GAN loss; imported here because train imports the methods

    real = per_sample_fisher(D, lambda call, xi, yi: gan_loss(call(xi, yi), True, mode), x, y)
    gen = per_sample_fisher(D, lambda call, xi, yi: gan_loss(call(xi, yi), False, mode), x, fake)
    return {k: 0.5 * (real[k] + gen[k]) for k in real}


class ThanhTung(Method):
    name = "thanh"
    title = "Thanh-Tung & Tran"
    cite = "Thanh-Tung & Tran 2018, On catastrophic forgetting and mode collapse in GANs [41]"
    options = (
        Option("thanh_lambda", 100.0, "weight of the EWC penalty on the discriminator"),
        Option("thanh_every", 50, "re-estimate the discriminator's Fisher every this many steps"),
        Option("thanh_gamma", 0.9, "discount of the earlier Fisher estimates at each re-estimate"),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        if self.opt.thanh_every < 1:
            raise UserError("--thanh-every: must be at least 1")
        self.anchor = QuadraticAnchor(decay=self.opt.thanh_gamma)
        self.steps = 0

    def discriminator_loss(self, step):
        penalty = self.anchor.penalty()
        return None if penalty is None else self.opt.thanh_lambda * penalty

    def after_step(self, step):
        self.steps += 1
        if self.ctx.cfg.lambda_adv <= 0 or self.steps % self.opt.thanh_every:
            return
        F = discriminator_fisher(self.ctx.D, step.x, step.y.float(), step.fake.detach().float(), self.ctx.cfg.gan_mode)
        self.anchor.update(self.ctx.D, F)

    def memory(self):
        return {"anchor": self.anchor.memory_bytes()} if self.anchor.active else {}
