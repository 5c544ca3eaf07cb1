"""SI (Zenke, Poole & Ganguli, 2017): synaptic intelligence, an online path-integral importance, on the generator.

*Original.* While a task mu trains, each weight k accumulates its share of the decrease of the task's loss along
the optimisation path, ``omega_k = -sum_t g_k(t) delta_theta_k(t)`` over the task's steps (``g`` the gradient of
the unregularised loss, ``delta_theta`` the update the optimiser made). When the task ends, the importance
``Omega_k = sum_tasks omega_k / ((Delta_k)^2 + xi)`` gains the task's term (``Delta_k`` how far the weight moved
over the whole task, ``xi`` a damping that keeps weights that barely moved from dividing by nearly zero), the
anchor theta* moves to the current weights, and the loss of every later task gains ``c * sum_k Omega_k (theta_k -
theta*_k)^2``. Unlike EWC no extra pass over the task's data is needed: the importance comes from the gradients
and updates training makes anyway.

*Here.* The same on the generator of paired translation. The loss integrated is the generator's training loss as
the loop computes it (the weighted content loss plus the adversarial term, and an architecture's own terms), not
the penalty: the loop hands the method the gradient of the whole generator loss (``after_step`` sees G's
``.grad`` once the optimiser has stepped), so the penalty's own gradient, taken by autograd when
``generator_loss`` builds the penalty (the same values that join ``.grad``), is subtracted from it before the
step's ``-g * delta_theta`` is added (``helpers.PathIntegral``). Each task is one segment: it starts from the
weights the task starts with (``before_task``) and closes in ``after_task``; the tasks' terms are summed, as in
the paper (``fisher.QuadraticAnchor`` with decay 1, theta* in float16 and Omega in bfloat16).

*The one calibration.* ``omega`` is already in the units of the loss: the loss decrease attributed to each
weight. On a quadratic ``h/2 (theta - theta_opt)^2`` walked to its minimum it is ``h/2 Delta^2``, so ``2 omega /
Delta^2`` is the curvature ``h``, the unit of the one curvature of the other quadratic penalties
(``fisher.gauss_newton_diagonal``). The anchor therefore stores ``2 Omega`` and the penalty is ``--si-c * 0.5 *
sum (2 Omega) (theta - theta*)^2``, which is exactly Zenke et al.'s ``c * sum Omega (theta - theta*)^2``: ``--si-c
1`` (the default, the value the paper uses on split MNIST) is then the plain second-order estimate of the old
tasks' loss rise, as ``--clgan-lambda 1`` is, wherever a task walks its weights close to a minimum and ``Delta^2``
is well above ``xi``; where the walk stops short, or noise makes the path longer than the displacement, the
estimate departs from the curvature (noise inflates omega, the damping shrinks Omega).

*Departures.* (1) A weight whose ``omega`` is negative over a task (its updates raised the loss on balance, as
Adam's momentum and the adversarial game can make them) adds nothing: ``max(omega, 0)``, so that the penalty never
rewards a weight for moving away from theta*. (2) The damping is scaled to how far a generator weight moves in a
task here: at most about lr x steps = 2e-4 x 600 = 0.12 with the default settings (``Delta^2 <= 1.4e-2``); the
default ``--si-xi 1e-3``, the paper's value on split MNIST, is a tenth of that, and a run whose weights move much
less (a short task, a small learning rate) should lower it. (3) A step the float16 gradient scaler skips (a
non-finite gradient) moves no weight and adds nothing.

*Memory kept:* theta* (float16) and Omega (bfloat16) of every generator weight: 4 bytes a weight, whatever the
number of tasks (``anchor``). The running task's path integral (omega, the step's gradient and two float32 copies
of the weights, 16 bytes a weight) is working memory of the task's training, like the optimiser's moments: it is
started afresh from the current weights at each task and nothing of it is kept when the task ends.
"""

from __future__ import annotations

import torch

from ..fisher import QuadraticAnchor
from .base import Method, Option
from .helpers import PathIntegral


class _TrainingLossPath(PathIntegral):
    """``PathIntegral`` of the training loss alone, from a ``.grad`` that also holds a penalty's gradient."""

    @torch.no_grad()
    def record_without(self, penalty_grads: dict[str, torch.Tensor] | None) -> None:
        self.record()
        for k, g in self.grad.items():
            if penalty_grads is not None and k in penalty_grads:
                g.sub_(penalty_grads[k])
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)  # a skipped step (fp16 overflow) moved nothing

    @torch.no_grad()
    def restart(self) -> None:
        """A new segment from the current weights, with nothing accumulated."""
        for k, p in self.params.items():
            now = p.detach().float()
            self.omega[k].zero_()
            self.start[k].copy_(now)
            self.prev[k].copy_(now)


class SI(Method):
    name = "si"
    title = "SI (Zenke et al.)"
    cite = "Zenke, Poole & Ganguli 2017, Continual learning through synaptic intelligence (ICML)"
    options = (
        Option("si_c", 1.0, "weight c of the penalty c * sum Omega (theta - theta*)^2 (1: the second-order estimate of the old tasks' loss rise)", low=0),
        Option("si_xi", 1e-3, "damping xi in Omega = omega / (Delta^2 + xi)", low=0, open_low=True),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.anchor = QuadraticAnchor(decay=1.0)
        self.path = _TrainingLossPath(ctx.G, damping=self.settings.si_xi)
        self._penalty_grads: dict[str, torch.Tensor] | None = None

    def before_task(self, t, task):
        self.path.restart()

    def generator_loss(self, step):
        self._penalty_grads = None
        penalty = self.anchor.penalty()
        if penalty is None:
            return None
        penalty = self.settings.si_c * penalty
        if torch.is_grad_enabled() and penalty.requires_grad:
            keys = list(self.path.params)
            grads = torch.autograd.grad(penalty, [self.path.params[k] for k in keys], retain_graph=True, allow_unused=True)
            self._penalty_grads = {k: g for k, g in zip(keys, grads) if g is not None}
        return penalty

    def after_step(self, step):
        self.path.record_without(self._penalty_grads)
        self._penalty_grads = None
        self.path.accumulate()

    def after_task(self, t, task):
        self.anchor.update(self.ctx.G, self.path.consolidate())

    def state_dict(self):
        return {"anchor": self.anchor.state_dict(), "path": self.path.state_dict()}

    def load_state_dict(self, state, seen):
        self.anchor.load_state_dict(state["anchor"], self.ctx.G)
        self.path.load_state_dict(state["path"])

    def memory(self):
        return {"anchor": self.anchor.memory_bytes()} if self.anchor.active else {}
