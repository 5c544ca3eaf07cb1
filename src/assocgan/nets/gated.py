"""The gated U-Net (``--arch gated``): the pix2pix U-Net behind a gate that infers from each input which kind of
correction it needs, so that one generator holds local corrections (noise, blur) and global ones (a colour cast,
a fade) at once.

A small MLP reads each input's global statistics (per-channel mean, spread and 2nd/98th percentiles, as the
U-Net's context does) and its high-pass energy (how noisy or how soft it is), and gives a softmax over ``experts``
experts. Each expert has three things, mixed by the gate's weights:

* a **colour transform** ``A_k x + b_k`` (3x3 and 3), applied to every pixel at full resolution before the U-Net:
  a global correction is then one exact affine map instead of something the U-Net must rebuild through its
  stride-2 stages and normalised features;
* a **FiLM** (scale and shift) of the U-Net's decoder stages, in place of the context MLP's;
* a **gain** of the U-Net's correction: ``out = c + gain * (U(c) - c)`` with ``c`` the colour-corrected input, so an
  expert whose inputs need no local correction can switch it off instead of carrying the others' into its task.

In training the colour stage is also taught on its own (``auxiliary_loss``, which the training loop adds to the
content loss with the same per-sample weights): ``c`` should already be the target as far as a global colour map
can make it. Without it the U-Net and the colour stage share every global correction between them, and a task
that an affine map inverts exactly (a fade) is learned to a few dB below what the map alone reaches.

Everything starts inert (identity colour transforms, zero FiLM, gain 1, the U-Net's zero last layer): an
untrained network is exactly the identity, like the U-Net. The gate and the colour stage run in float32 under
autocast (a fade's exact inverse needs more than bf16's 8 bits). docs/results.md ("Joint learning of local and global
tasks") has the measurements that chose this design against the U-Net and the others tried.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..losses import content_loss
from .unet import UNet, image_statistics

EXPERTS = 8
HIDDEN = 64


def input_features(xs: torch.Tensor) -> torch.Tensor:
    """What the gate reads of (N, C, H, W) images in [-1, 1]: ``image_statistics`` (exposure, contrast, colour) and
    the log of each channel's mean absolute and root-mean-square Laplacian (noise raises it, blur lowers it): (N, 6C)."""
    xs = xs.float()
    lap = 4 * xs[..., 1:-1, 1:-1] - xs[..., :-2, 1:-1] - xs[..., 2:, 1:-1] - xs[..., 1:-1, :-2] - xs[..., 1:-1, 2:]
    lap = lap.flatten(2)
    return torch.cat([image_statistics(xs), torch.log(lap.abs().mean(2) + 1e-3), 0.5 * torch.log(lap.pow(2).mean(2) + 1e-6)], 1)


class GatedUNet(nn.Module):
    def __init__(
        self, in_ch: int = 3, out_ch: int = 3, ngf: int = 32, norm: str = "instance", residual: bool = True, dropout: float = 0.0, experts: int = EXPERTS
    ):
        super().__init__()
        self.experts = experts
        self.gate = nn.Sequential(nn.Linear(6 * in_ch, HIDDEN), nn.ReLU(True), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(True), nn.Linear(HIDDEN, experts))
        # a gate that starts decisive: experts see different images from the first step and part ways
        nn.init.normal_(self.gate[-1].weight, 0.0, 0.5)
        self.colour_matrix = nn.Parameter(torch.eye(in_ch).repeat(experts, 1, 1))
        self.colour_offset = nn.Parameter(torch.zeros(experts, in_ch))
        self.gain = nn.Parameter(torch.ones(experts))
        self.unet = UNet(in_ch, out_ch, ngf, norm=norm, residual=residual, dropout=dropout, context=False)
        self.film = nn.Linear(experts, 2 * sum(self.unet.film_widths), bias=False)
        nn.init.zeros_(self.film.weight)
        self._colour: torch.Tensor | None = None  # the colour stage's output of the last forward in training mode

    def __getstate__(self) -> dict:
        """Copies (a method's teacher, a saved module) leave the last forward's colour output behind."""
        return {**self.__dict__, "_colour": None}

    @property
    def down(self) -> nn.ModuleList:
        """The U-Net's encoder stages (what an encoder-side method, LiSS, reads)."""
        return self.unet.down

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's weights of each image (N, experts), rows summing to 1."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.softmax(self.gate(input_features(x.float() * 2 - 1)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            g = self.weights(x)
            A = torch.einsum("nk,kij->nij", g, self.colour_matrix)
            c = torch.einsum("nij,njhw->nihw", A, x.float()) + (g @ self.colour_offset)[:, :, None, None]
            film = (g @ self.film.weight.t()).split([2 * w for w in self.unet.film_widths], 1)
            film = [(1 + f[:, :w, None, None], f[:, w:, None, None]) for f, w in zip(film, self.unet.film_widths)]
        self._colour = c if self.training and torch.is_grad_enabled() else None
        out = self.unet(c, film=film)
        if out.shape[1] != c.shape[1]:
            return out
        return c + (g @ self.gain)[:, None, None, None] * (out - c)

    def auxiliary_loss(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor | None:
        """The colour stage's own content loss on the last training forward's images (their targets ``y``; with
        ``weight``, one per sample, the weighted sum of the samples' MSEs, as the content loss); None when that
        forward was not a training one. Read once: the stored output is released."""
        c, self._colour = self._colour, None
        if c is None or c.shape != y.shape:
            return None
        return content_loss(c, y.float(), weight)


__all__ = ["GatedUNet", "input_features", "EXPERTS"]
