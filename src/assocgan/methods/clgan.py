"""CLGAN (Seff et al., 2017): elastic weight consolidation (EWC) on the generator.

*Original.* A class-conditional GAN learns its classes one after another. After each, the diagonal Fisher
information of the generator's weights is estimated (from the discriminator's output on generated samples, since
an unconditional generator has no target), and while later classes train the generator's loss gains the EWC
penalty ``lambda/2 * sum_k F_k (theta_k - theta*_k)^2``, which holds the weights that mattered for earlier
classes near their old values.

*Here.* Paired translation has a target, so the Fisher comes from the content likelihood, as in the continual
distillation of Assoc-GAN: after task t, ``--clgan-samples`` training pairs of the task (drawn from a random
stream of their own, so that the setting changes no other draw of the run) give the curvature of the content
loss at theta*, the diagonal of its Gauss-Newton matrix, the one curvature every quadratic penalty here uses
(``fisher.content_curvature``, ``fisher.gauss_newton_diagonal``; the expected Fisher of the Gaussian
likelihood, not the empirical one, whose correlated residuals overstate it; see "The quadratic penalties'
curvature" above): the penalty ``0.5 * sum H (theta - theta*)^2`` then predicts how much the old task's content
loss rises, in the units of the current content loss, at any image size, and ``--clgan-lambda 1`` is that plain
second-order estimate (the Laplace approximation, each task weighing as much as the next). Several tasks combine as online
EWC: importance ``F <- decay * F + F_new`` (``--clgan-decay``, 1 sums them as EWC's per-task penalties do) and
theta* moves to the newest weights. No penalty acts during the first task. Measured figures: docs/results.md,
"The quadratic penalties in the units of the loss" and "Every method on restore4 (seed 0)".

*Memory kept:* theta* (float16) and the importance (bfloat16) of every generator weight: about 4 bytes a weight,
whatever the number of tasks (``memory_bytes``: ``anchor``).
"""

from __future__ import annotations

from ..fisher import QuadraticAnchor, content_curvature
from .base import Method, Option


class CLGAN(Method):
    name = "clgan"
    title = "CLGAN"
    cite = "Seff et al. 2017, Continual learning in generative adversarial nets [40]"
    options = (
        Option("clgan_lambda", 1.0, "weight of the EWC penalty (1: the second-order estimate of the old tasks' content-loss rise)", low=0),
        Option("clgan_samples", 64, "training pairs of a task that estimate its Fisher", low=1),
        Option("clgan_decay", 1.0, "online EWC: the old importance is multiplied by this before the new is added", low=0),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.anchor = QuadraticAnchor(decay=self.settings.clgan_decay)
        self.last_mse: float | None = None

    def generator_loss(self, step):
        penalty = self.anchor.penalty()
        if penalty is None:
            return None
        return self.settings.clgan_lambda * penalty

    def after_task(self, t, task):
        G = self.ctx.G
        gen = self.ctx.side_stream("clgan-fisher", t)  # so that the penalty's setting changes no other draw of the run
        x, y = task.sample(self.settings.clgan_samples, gen)
        importance, self.last_mse = content_curvature(G, x.to(self.ctx.device), y.to(self.ctx.device), gen)
        self.anchor.update(G, importance)

    def state_dict(self):
        return {"anchor": self.anchor.state_dict(), "last_mse": self.last_mse}

    def load_state_dict(self, state, seen):
        self.anchor.load_state_dict(state["anchor"], self.ctx.G)
        self.last_mse = state["last_mse"]

    def memory(self):
        return {"anchor": self.anchor.memory_bytes()} if self.anchor.active else {}
