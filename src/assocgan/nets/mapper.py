"""The mapping-memory mapper M_j: y -> x, the inverse of task j (paper §3.2; CycleGAN's ResNet-generator design,
scaled down).

It predicts a per-pixel Gaussian over the source image: a mean (as a correction of y) and a log standard
deviation. Sampling ``mean + scale * std * eps`` reproduces random degradations (noise, JPEG) instead of their
average, which a plain L1/MSE mapper would produce (a clean image). No normalisation layers: brightness and
colour are what several degradations change, and instance statistics would erase them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ..rng import randn



class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, padding_mode="reflect"), nn.ReLU(True), nn.Conv2d(ch, ch, 3, 1, 1, padding_mode="reflect"))

    def forward(self, x):
        return x + self.body(x)


class Mapper(nn.Module):
    """A ResNet generator (CycleGAN's c-d-R-u-c layout) run on the space-to-depth image, plus a per-pixel path.

    The context path folds y into 2x2 blocks (half resolution, 12 channels): a 3x3 stem, a stride-2 stage,
    residual blocks at a quarter resolution, an upsampling stage with a skip from the stem, unfolded back to
    full resolution (receptive field about 40 pixels: blurs, blocks). The per-pixel path (1x1 convolutions)
    sees each pixel's exact colour (tone curves, colour casts). A 1x1 head joins them into a mean correction and
    a log-std. No 3x3 convolution runs at full resolution, so a mapper costs a fraction of a U-Net step.
    """

    LOG_STD_MIN, LOG_STD_MAX = -7.0, 0.0

    def __init__(self, ngf: int = 16, n_blocks: int = 2):
        super().__init__()
        c, k = ngf, max(4, ngf // 2)
        self.stem = nn.Sequential(nn.Conv2d(12, c, 3, 1, 1, padding_mode="reflect"), nn.ReLU(True))
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1, padding_mode="reflect"), nn.ReLU(True))
        self.blocks = nn.Sequential(*[ResBlock(2 * c) for _ in range(n_blocks)])
        self.up = nn.Sequential(nn.Conv2d(2 * c, c, 3, 1, 1, padding_mode="reflect"), nn.ReLU(True))
        self.unfold = nn.Conv2d(2 * c, 4 * k, 1)  # k channels at full resolution after pixel shuffle
        self.pixel = nn.Sequential(nn.Conv2d(3, c, 1), nn.ReLU(True))
        self.head = nn.Sequential(nn.Conv2d(k + c, c, 1), nn.ReLU(True), nn.Conv2d(c, 6, 1))
        # PyTorch's default (Kaiming-uniform) initialisation: without normalisation layers, pix2pix's N(0, 0.02)
        # would shrink the activations layer after layer and slow training many times over
        last = self.head[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():  # the mean starts at y, the std small
            last.bias.zero_()
            last.bias[3:].fill_(-3.0)
        # a per-mapper scale of the sampled noise, set after training (0: deterministic task)
        self.register_buffer("noise_scale", torch.ones(()))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the source image given target ``y`` (both (N,3,H,W), images in [0, 1]; H, W even)."""
        ys = y * 2 - 1
        s = self.stem(F.pixel_unshuffle(ys, 2))
        z = self.blocks(self.down(s))
        z = self.up(F.interpolate(z, size=s.shape[-2:], mode="nearest"))
        context = F.pixel_shuffle(self.unfold(torch.cat([z, s], 1)), 2)
        h = self.head(torch.cat([context, self.pixel(ys)], 1)).float()
        mean = y + h[:, :3]
        log_std = h[:, 3:].clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        return mean, log_std

    @torch.no_grad()
    def sample(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One draw of a source image for each target in ``y``, in [0, 1]."""
        mean, log_std = self(y)
        eps = randn(mean.shape, gen, mean.device, mean.dtype)  # on gen's device: the device's own stream in training
        return (mean + self.noise_scale * log_std.exp() * eps).clamp(0, 1)


def mapper_loss(mapper: Mapper, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE for the mean, plus the Gaussian NLL of the log-std with the mean held fixed (stable: a joint NLL
    fit of mean and std diverges on some tasks)."""
    mean, log_std = mapper(y)
    mse = F.mse_loss(mean, x)
    resid2 = (x - mean.detach()).pow(2)
    nll = (0.5 * resid2 * torch.exp(-2 * log_std) + log_std).mean()
    return mse + 0.01 * nll
