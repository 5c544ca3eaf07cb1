"""Lifelong GAN (Zhai et al., 2019): knowledge distillation from the previous generator on auxiliary images.

*Original.* For image-conditioned generation (BicycleGAN) learned task after task, a frozen copy of the model
trained on the previous tasks is kept, and while the new task trains the new model is asked to give the same
outputs as the old one (an L1 distillation loss). Distilling on the new task's own inputs would ask the network
to map the same input to two different outputs, so the paper distils on auxiliary images built from the current
data: *montage* (patches cut from several training images and tiled into new images) and *swap* (the conditional
and the target image exchanged, so the target images serve as inputs).

*Here.* The same with the U-Net generator of paired translation. After each task the generator is frozen into a
teacher (``helpers.FrozenTeacher``, stored in float16). While the next task trains, every step builds one
auxiliary batch per kind named in ``--lifelonggan-aux`` from the current batch: ``montage`` (each image tiled
from a ``--lifelonggan-grid`` x ``--lifelonggan-grid`` grid of patches taken at random from the batch's sources,
at random places), ``swap`` (the batch's targets y as inputs), ``halves`` (each source made of the top half of
one image and the bottom half of another, with left and right swapped), ``current`` (the current sources
themselves, which pulls against the content loss). The generator's loss gains ``--lifelonggan-lambda`` times the
mean absolute difference between the new and the old generator's outputs on them. The paper's distillation
weight sits beside an L1 reconstruction term on [-1, 1] images; here the content loss is an MSE on [0, 1] images
(about 1e-3 to 1e-2), whose gradient per pixel is ``2 * residual`` against L1's constant, so the weight is
lowered to match: a larger one keeps more of the old task and learns the new one less (an early restore4, seed 0:
BWT -5.3 at the default 0.3 against TL's -9.0; docs/results.md, "How the baselines were set up"). Distilling on
the current sources alone keeps nothing, as the paper argues; ``swap`` matters most for restoration, and adding
``halves`` or ``current`` keeps less. Nothing is distilled during the first task.

*Memory kept:* the previous generator in float16 (``memory_bytes``: ``teacher``), 2 bytes a generator weight,
whatever the number of tasks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import Method, Option
from .helpers import FrozenTeacher, KeepsPreviousGenerator

AUX_KINDS = ("montage", "swap", "halves", "current")


def montage(x: torch.Tensor, grid: int, gen: torch.Generator) -> torch.Tensor:
    """Images tiled from a grid x grid of patches, each cut from a random image of the batch at a random place."""
    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    k = n * grid * grid
    src = torch.randint(0, n, (k,), generator=gen).to(x.device)
    oy = torch.randint(0, h - ph + 1, (k,), generator=gen).to(x.device)
    ox = torch.randint(0, w - pw + 1, (k,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(ph, device=x.device))[:, :, None]  # (k, ph, 1)
    cols = (ox[:, None] + torch.arange(pw, device=x.device))[:, None, :]  # (k, 1, pw)
    patches = x[src[:, None, None], :, rows, cols]  # (k, ph, pw, c)
    patches = patches.view(n, grid, grid, ph, pw, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, grid * ph, grid * pw)
    if grid * ph != h or grid * pw != w:  # sizes not divisible by the grid: fill up to the original size
        patches = F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)
    return patches


def swapped_halves(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image made of the top half of one image and the bottom half of another, left and right swapped."""
    n, _, h, w = x.shape
    other = torch.randperm(n, generator=gen)
    out = torch.cat([x[:, :, : h // 2], x[other, :, h // 2 :]], 2)
    return torch.cat([out[..., w // 2 :], out[..., : w // 2]], 3)


class LifelongGAN(KeepsPreviousGenerator, Method):
    name = "lifelonggan"
    batch_ahead = False  # its loss draws from the run's stream every step
    title = "Lifelong GAN"
    cite = "Zhai et al. 2019, Lifelong GAN: continual learning for conditional image generation [52]"
    options = (
        Option("lifelonggan_lambda", 0.3, "weight of the L1 distillation between the new and the previous generator's outputs", low=0),
        Option("lifelonggan_aux", "montage,swap", "auxiliary inputs to distil on, comma-separated: " + ", ".join(AUX_KINDS)),
        Option("lifelonggan_grid", 4, "montage: patches per side", low=1),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.kinds = [k.strip() for k in self.settings.lifelonggan_aux.split(",") if k.strip()]
        bad = [k for k in self.kinds if k not in AUX_KINDS]
        if bad or not self.kinds:
            raise UserError(f"--lifelonggan-aux: {self.settings.lifelonggan_aux!r}; name one or more of {', '.join(AUX_KINDS)}")
        self.teacher: FrozenTeacher | None = None

    def check_tasks(self, tasks):
        side = min(min(t.train_x.shape[-2:]) for t in tasks)
        if "montage" in self.kinds and self.settings.lifelonggan_grid > side:
            raise UserError(
                f"--lifelonggan-grid {self.settings.lifelonggan_grid}: the montage's patches of the {side} px training images would be "
                f"under one pixel; give at most {side}"
            )

    def auxiliary(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The auxiliary inputs of one step, made from the current batch."""
        gen = self.ctx.gen
        make = {
            "montage": lambda: montage(x, self.settings.lifelonggan_grid, gen),
            "swap": lambda: y,
            "halves": lambda: swapped_halves(x, gen),
            "current": lambda: x,
        }
        return torch.cat([make[k]() for k in self.kinds])

    def distillation(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Mean absolute difference between the generator's and the teacher's outputs on the auxiliary inputs."""
        if self.teacher is None:
            return None
        aux = self.auxiliary(x.detach(), y.detach())
        with self.ctx.autocast():
            old = self.teacher(aux)
            new = self.ctx.G(aux)
        return (new.float() - old.float()).abs().mean()

    def generator_loss(self, step):
        d = self.distillation(step.x, step.y)
        return None if d is None else self.settings.lifelonggan_lambda * d
