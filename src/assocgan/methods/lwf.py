"""LwF, Learning without Forgetting (Li & Hoiem, 2016): distillation from the previous network on the new task's
own inputs.

*Original.* A classifier with shared layers and one output head per task learns a new task without the old
tasks' data: before training, the network as it stands is run on the new task's images and its old heads'
responses are recorded; while the new task trains (a new head added, after a warm-up that trains the new head
alone), the old heads are asked to keep giving those responses. The term is a knowledge-distillation loss, the
cross-entropy between the recorded and the current class probabilities softened by a temperature T = 2, weighted
by lambda_o = 1 beside the new task's cross-entropy. The old network's responses to the *current* data stand in
for the old tasks' data, which is not kept.

*Here.* The generator has one output shared by every task, so the old network is kept whole: after each task the
generator is frozen into a teacher G_old (``helpers.FrozenTeacher``, stored in float16), and while task t trains
the generator's loss gains ``--lwf-lambda`` * MSE(G(x_t), G_old(x_t)), the mean squared difference between the
generator's outputs on the step's sources x_t (the outputs the content loss also sees) and the teacher's. The
teacher answers at each step on that step's sources rather than once before the task (the sources may be drawn
afresh each step, and nothing is stored per training image); it answers as at test time (``eval``). The
departure: the paper's distillation loss on softened class probabilities (cross-entropy at a temperature) has no
counterpart in regression, so the outputs are compared by the mean squared error, the unit of the content loss;
the default weight is the paper's lambda_o = 1, at which the two terms pull alike (at the content weight's
default, 1). Nor is there a new head to warm up: the new task trains the same output as the old ones. Nothing is
distilled during the first task: it trains exactly as TL, as it does at weight 0.

*What it can keep.* The term holds G's answer on the new task's inputs only. In classification each old head
answers a question of its own, and its responses to the new images carry what it knew of similar images. In
translation the old and the new task answer with the same output: on x_t the content loss asks for the new
target y_t and the distillation for G_old(x_t), and a generator free to fit each input would settle between the
two (at content weight c, (c * y_t + lambda * G_old(x_t)) / (c + lambda)), so a larger weight learns the new task
less. What it keeps of an old task is what the old mapping's behaviour on x_t implies for that task's own inputs
through the shared weights: much when the old task's inputs look like the new one's (the same kind of images, a
similar degradation), little when they differ (a generator asked to leave blurred images as the denoiser left
them says nothing direct about the noisy images the denoiser was trained on). Lifelong GAN (``lifelonggan``)
distils on auxiliary images for this reason.

*Memory kept:* the previous generator in float16 (``memory_bytes``: ``teacher``), 2 bytes a generator weight,
whatever the number of tasks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, Option, Step
from .helpers import FrozenTeacher, KeepsPreviousGenerator


class LwF(KeepsPreviousGenerator, Method):
    name = "lwf"
    title = "LwF (Li & Hoiem)"
    cite = "Li & Hoiem 2016, Learning without forgetting (ECCV 2016; TPAMI 2017)"
    options = (
        Option(
            "lwf_lambda",
            1.0,
            "weight of the MSE distillation between the generator's and the previous generator's outputs on the current sources (the paper: 1)",
            low=0,
        ),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.teacher: FrozenTeacher | None = None

    def distillation(self, x: torch.Tensor, fake: torch.Tensor | None = None) -> torch.Tensor | None:
        """MSE between the generator's outputs on sources ``x`` (``fake`` if already computed, with its gradient)
        and the teacher's; None before the first task ends."""
        if self.teacher is None:
            return None
        x = x.detach()
        with self.ctx.autocast():
            old = self.teacher(x)
            if fake is None:
                fake = self.ctx.G(x)
        return F.mse_loss(fake.float(), old.float())

    def generator_loss(self, step: Step) -> torch.Tensor | None:
        d = self.distillation(step.x, step.fake)
        return None if d is None else self.settings.lwf_lambda * d
