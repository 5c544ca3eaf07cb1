"""MAS (Aljundi et al., 2018): Memory Aware Synapses on the generator.

*Original.* After a task, each weight's importance is how sensitive the learned function F is to it, measured
without labels on the task's inputs: ``Omega_k = mean_n |d ||F(x_n)||_2^2 / d theta_k|``, the magnitude of the
gradient of the squared L2 norm of the output (a scalar stand-in for the gradient of a multi-dimensional
output), averaged over the inputs. The importances of the tasks are accumulated (summed), and while later tasks
train the loss gains ``lambda * sum_k Omega_k (theta_k - theta*_k)^2``, theta* the weights after the last task.

*Here.* The function is the generator, and the inputs are ``--mas-samples`` training sources of the task, drawn
from a random stream of their own so that the setting changes no other draw of the run (the targets are not
used). Two adaptations to an image translator:

- *The change, not the output* (``--mas-function change``, the default): the norm taken is that of
  ``G(x) - x``, the change the generator makes to its input, not of ``G(x)``. An image's squared norm depends on
  where the pixel scale puts zero ([0, 1] or [-1, 1]), so the output's norm measures the sensitivity of whatever
  that origin makes of the brightness, while the change's norm is the same for any origin. For the residual U-Net,
  ``G(x) = x + r(x; theta)``, the change is exactly the correction the weights compute (the identity path has no
  weights); an untrained residual U-Net changes nothing and gives no importance. ``--mas-function output`` takes
  the paper's ``G(x)`` as the generator returns it, in [0, 1]. Where the output has another shape than the input
  the output is taken.
- *The mean square, not the sum*: the squared norm is divided by the number of values of an image, so that the
  importance does not grow with the image size (a constant factor, which lambda absorbs).

The per-input gradients are taken one input at a time (torch.func's vmap of grad, in chunks) with the generator
in evaluation mode, as the curvature of the other quadratic penalties is. No penalty acts during the first task.

*Units.* Omega is a sensitivity of the output, not a curvature of a loss: unlike the penalties built on
``fisher.gauss_newton_diagonal`` (CLGAN, Thanh-Tung & Tran, Assoc-GAN's distillation), ``lambda = 1`` is no
estimate of a loss rise (Omega is first order in the generator's change and in its sensitivity, the curvature
second order in the sensitivity), and the weight is set by measurement. The default ``--mas-lambda 10`` acts
without stopping learning. Measured on restore4's tasks 1 and 2 (noise, then impulse), seed 0, with ``assocgan run
--preset smoke --benchmark restore4 --order 1,2 --size 32 --ngf 16 --steps 150 --batch-size 8 --n-train 128
--n-test 16 --lr 2e-3 --beta1 0.9 --lambda-adv 0 --methods tl,mas --mas-lambda L`` (PSNR in dB: task 1 after task 2 / task 2; TL 20.78 / 21.06,
task 1 scored 24.72 right after its training): lambda 1 20.83 / 20.89 (the penalty 5% of the content loss at
the end of task 2), 10 21.49 / 20.10 (21%), 100 24.40 / 18.14, 1000 24.66 / 17.50 (the generator all but frozen).
The paper's own weight, 1, barely acts here; 100 and more keep task 1 but hardly learn task 2.

*Memory kept:* theta* (float16) and the accumulated importance (bfloat16) of every generator weight: about 4 bytes
a weight, whatever the number of tasks (``memory_bytes``: ``anchor``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from ..fisher import QuadraticAnchor
from .base import Method, Option


def output_sensitivity(model: nn.Module, x: torch.Tensor, change: bool = True, chunk: int = 16) -> dict[str, torch.Tensor]:
    """MAS's importance of each trainable weight of ``model`` on the inputs ``x``: the mean over inputs of
    ``|d mean_v f_v(x)^2 / d theta|``, with ``f(x) = model(x) - x`` (``change``, where the shapes agree) or
    ``model(x)``, each input's gradient taken on its own, with the model in evaluation mode."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def square_norm(p, xi):
        out = functional_call(model, (p, buffers), (xi[None],)).float()
        if change and out.shape == xi[None].shape:
            out = out - xi[None].float()
        return out.pow(2).mean()

    g_fn = vmap(grad(square_norm), in_dims=(None, 0))
    total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():  # torch.func falls back to a loop for a few ops (the context's quantile): slower, not wrong
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented the batching rule")
            for i in range(0, x.shape[0], chunk):
                for k, g in g_fn(params, x[i : i + chunk]).items():
                    total[k] += g.float().abs().sum(0)
    finally:
        model.train(was_training)
    return {k: v / x.shape[0] for k, v in total.items()}


class MAS(Method):
    name = "mas"
    title = "MAS (Aljundi et al.)"
    cite = "Aljundi et al. 2018, Memory aware synapses: learning what (not) to forget, ECCV"
    options = (
        Option(
            "mas_lambda", 10.0, "weight of the MAS penalty lambda * sum Omega (theta - theta*)^2 (Omega is no loss curvature: see the method's notes)", low=0
        ),
        Option("mas_samples", 64, "training sources of a task that its importance is averaged over", low=1),
        Option(
            "mas_function",
            "change",
            "whose squared norm's gradient is the importance: change = G(x) - x (the same for any pixel origin), output = G(x) as in the paper",
            choices=("change", "output"),
        ),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.anchor = QuadraticAnchor(decay=1.0)  # the importances of the tasks are summed, theta* the newest weights

    def generator_loss(self, step):
        penalty = self.anchor.penalty()  # 0.5 * sum Omega (theta - theta*)^2
        if penalty is None:
            return None
        return 2.0 * self.settings.mas_lambda * penalty

    def after_task(self, t, task):
        gen = self.ctx.side_stream("mas-inputs", t)  # so that the penalty's setting changes no other draw of the run
        x, _ = task.sample(self.settings.mas_samples, gen)
        importance = output_sensitivity(self.ctx.G, x.to(self.ctx.device), change=self.settings.mas_function == "change")
        self.anchor.update(self.ctx.G, importance)

    def state_dict(self):
        return {"anchor": self.anchor.state_dict()}

    def load_state_dict(self, state, seen):
        self.anchor.load_state_dict(state["anchor"], self.ctx.G)

    def memory(self):
        return {"anchor": self.anchor.memory_bytes()} if self.anchor.active else {}
