"""Liang et al. (2018): the discriminator regularised by intelligent synapses (online path-integral importance).

*Original.* "GAN training is a continual learning problem": the discriminator should not forget the fakes of
earlier generators. Besides an EWC variant, the paper adapts intelligent synapses (synaptic intelligence, Zenke
et al. 2017) to the discriminator (IS-GAN): while it trains, each weight accumulates its contribution to the
decrease of the discriminator's loss along the optimisation path, ``omega += -g * delta_theta``; every N steps
(one "task" = one stretch of generator snapshots) the importance ``omega / (delta^2 + xi)`` is folded, with a
discount, into the running importance, the anchor moves to the current weights, and the discriminator's loss
gains ``c/2 * sum Omega (theta - theta*)^2``. Unlike EWC no extra gradient pass is needed: the importance comes
from the gradients training already computes.

*Here.* The same on the conditional PatchGAN of paired translation, running across task boundaries so that the
discriminator keeps recognising earlier tasks' real and generated pairs. In every D step the gradient of the
discriminator's GAN loss alone is recorded (``discriminator_gradients``, before the penalty's own gradient joins
it: Zenke et al. integrate the unregularised loss), and after the update each weight's share of the loss
decrease is accumulated (``helpers.PathIntegral``); every ``--liang-every`` steps, and at the end of each task,
a segment closes: ``Omega <- gamma * Omega + 2 max(omega, 0) / (delta^2 + xi)`` (``--liang-gamma``,
``--liang-damping``) and theta* moves to the current weights (``fisher.QuadraticAnchor``); the discriminator's
loss gains ``--liang-c * 0.5 * sum Omega (theta - theta*)^2``. The factor 2 makes Omega the curvature on a
quadratic loss walked to its minimum, the unit of the one curvature every quadratic penalty here uses
(``fisher.gauss_newton_diagonal``), so ``c = 1`` is Zenke et al.'s ``c = 1`` and the second-order estimate of the
discriminator's loss rise alike. It differs from ``thanh`` in where the importance comes from: the loss
decrease each weight produced along the path, not the squared gradients at a point. As with ``thanh`` the
generator feels it only through the adversarial term. The damping ``xi`` is scaled to how far the
discriminator's weights move in one segment here (at most about lr x N = 1e-2, delta^2 <= 1e-4). Measured
figures: docs/results.md, "The paper's protocol (`--preset paper-quick`)" and "Every method on
restore4 (seed 0)".

*Memory kept:* the discriminator's theta* (float16) and Omega (bfloat16) (``anchor``, 4 bytes a weight), plus the
running segment's path integral, the recorded gradient and two float32 copies of the discriminator's weights
(``path``, 16 bytes a weight): 20 bytes a discriminator weight in all; nothing of the generator.
"""

from __future__ import annotations

from ..fisher import QuadraticAnchor
from .base import Method, Option
from .helpers import PathIntegral


class Liang(Method):
    name = "liang"
    title = "Liang et al."
    cite = "Liang et al. 2018, Generative adversarial network training is a continual learning problem [23]"
    options = (
        Option("liang_c", 1.0, "weight c of the path-integral penalty on the discriminator", low=0),
        Option("liang_every", 50, "close a segment (fold its importance in, move the anchor) every this many steps", low=1),
        Option("liang_gamma", 0.9, "discount of the earlier importance when a segment closes", low=0),
        Option("liang_damping", 1e-5, "xi in omega / (delta^2 + xi)", low=0, open_low=True),
    )

    needs_discriminator = True

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.anchor = QuadraticAnchor(decay=self.settings.liang_gamma)
        self.path = PathIntegral(ctx.D, damping=self.settings.liang_damping)
        self.steps = 0

    def discriminator_loss(self, step):
        penalty = self.anchor.penalty()
        return None if penalty is None else self.settings.liang_c * penalty

    def discriminator_gradients(self, step):
        self.path.record()  # D's gradient of its GAN loss alone, as Zenke et al. integrate it

    def after_step(self, step):
        self.path.accumulate()
        self.steps += 1
        if self.steps % self.settings.liang_every == 0:
            self._close_segment()

    def after_task(self, t, task):
        if self.steps % self.settings.liang_every:
            self._close_segment()

    def _close_segment(self):
        self.anchor.update(self.ctx.D, self.path.consolidate())

    def state_dict(self):
        return {"anchor": self.anchor.state_dict(), "path": self.path.state_dict(), "steps": self.steps}

    def load_state_dict(self, state, seen):
        self.anchor.load_state_dict(state["anchor"], self.ctx.D)
        self.path.load_state_dict(state["path"])
        self.steps = state["steps"]

    def memory(self):
        if not self.anchor.active:
            return {}
        return {"anchor": self.anchor.memory_bytes(), "path": self.path.memory_bytes()}
