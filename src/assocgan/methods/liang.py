"""Liang et al. (2018): the discriminator regularised by intelligent synapses (online path-integral importance).

*Original.* "GAN training is a continual learning problem": the discriminator should not forget the fakes of
earlier generators. Besides an EWC variant, the paper adapts intelligent synapses (synaptic intelligence,
Zenke et al. 2017) to the discriminator (IS-GAN): while it trains, each weight accumulates its contribution
to the decrease of the discriminator's loss along the optimisation path, ``omega += -g * delta_theta``; every
N steps (one "task" = one stretch of generator snapshots) the importance ``omega / (delta^2 + xi)`` is folded,
with a discount, into the running importance, the anchor moves to the current weights, and the
discriminator's loss gains ``c/2 * sum Omega (theta - theta*)^2``. Unlike EWC no extra gradient pass is
needed: the importance comes from the gradients training already computes.

*Here.* The same on the conditional PatchGAN of paired translation, running across task boundaries so that
the discriminator keeps recognising earlier tasks' real and generated pairs. After every step the path
integral is accumulated from the discriminator's gradient and update (``helpers.PathIntegral``); every
``--liang-every`` steps, and at the end of each task, a segment closes: ``Omega <- gamma * Omega +
max(omega, 0) / (delta^2 + xi)`` (``--liang-gamma``, ``--liang-damping``) and theta* moves to the current
weights (``fisher.QuadraticAnchor``); the discriminator's loss gains ``--liang-c * 0.5 * sum Omega (theta -
theta*)^2``. It differs from ``thanh`` in where the importance comes from: the loss decrease each weight
produced along the path, not the squared gradients at a point. As with ``thanh`` the generator feels it only
through the small adversarial term, so its forgetting changes little (the paper's Table 1 and Figure 6 show
[23] forgetting). With ``--lambda-adv 0`` the method is TL. Because Omega is measured in units of the
discriminator's own loss decrease, ``c`` is on synaptic intelligence's scale (Zenke et al. use 0.1 to 1); the
default is measured so that the penalty is a sizeable part of the discriminator's loss.

*Memory kept:* the discriminator's theta* (float16) and Omega (bfloat16) (``anchor``), plus the running
segment's path integral and two float32 copies of the discriminator's weights (``path``), about 16 bytes a
discriminator weight in all; nothing of the generator.
"""
from __future__ import annotations

from ..errors import UserError
from ..fisher import QuadraticAnchor
from .base import Method, Option
from .helpers import PathIntegral


class Liang(Method):
    name = "liang"
    title = "Liang et al."
    cite = "Liang et al. 2018, Generative adversarial network training is a continual learning problem [23]"
    options = (
        Option("liang_c", 1.0, "weight c of the path-integral penalty on the discriminator"),
        Option("liang_every", 50, "close a segment (fold its importance in, move the anchor) every this many steps"),
        Option("liang_gamma", 0.9, "discount of the earlier importance when a segment closes"),
        Option("liang_damping", 1e-3, "xi in omega / (delta^2 + xi)"),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        if self.opt.liang_every < 1:
            raise UserError("--liang-every: must be at least 1")
        if self.opt.liang_damping <= 0:
            raise UserError("--liang-damping: must be positive")
        self.anchor = QuadraticAnchor(decay=self.opt.liang_gamma)
        self.path = PathIntegral(ctx.D, damping=self.opt.liang_damping)
        self.steps = 0

    def discriminator_loss(self, step):
        penalty = self.anchor.penalty()
        return None if penalty is None else self.opt.liang_c * penalty

    def after_step(self, step):
        if self.ctx.cfg.lambda_adv <= 0:
            return
        self.path.accumulate()  # D's .grad still holds the gradient of this step's discriminator update
        self.steps += 1
        if self.steps % self.opt.liang_every == 0:
            self._close_segment()

    def after_task(self, t, task):
        if self.ctx.cfg.lambda_adv > 0 and self.steps % self.opt.liang_every:
            self._close_segment()

    def _close_segment(self):
        self.anchor.update(self.ctx.D, self.path.consolidate())

    def memory(self):
        if not self.anchor.active:
            return {}
        return {"anchor": self.anchor.memory_bytes(), "path": self.path.memory_bytes()}
