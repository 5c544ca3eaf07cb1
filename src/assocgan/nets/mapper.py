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

from .layers import init_weights


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, padding_mode="reflect"), nn.ReLU(True), nn.Conv2d(ch, ch, 3, 1, 1, padding_mode="reflect"))

    def forward(self, x):
        return x + self.body(x)


class Mapper(nn.Module):
    LOG_STD_MIN, LOG_STD_MAX = -7.0, 0.0

    def __init__(self, ngf: int = 16, n_blocks: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ngf, 3, 1, 1, padding_mode="reflect"), nn.ReLU(True))
        self.down = nn.Sequential(nn.Conv2d(ngf, 2 * ngf, 3, 2, 1, padding_mode="reflect"), nn.ReLU(True))
        self.blocks = nn.Sequential(*[ResBlock(2 * ngf) for _ in range(n_blocks)])
        self.up = nn.Sequential(nn.Conv2d(2 * ngf, ngf, 3, 1, 1, padding_mode="reflect"), nn.ReLU(True))
        self.head = nn.Conv2d(2 * ngf, 6, 3, 1, 1, padding_mode="reflect")
        init_weights(self)
        nn.init.zeros_(self.head.weight)
        # the std head starts small
        with torch.no_grad():
            self.head.bias[3:].fill_(-3.0)
        # a per-mapper scale of the sampled noise, set after training (0: deterministic task)
        self.register_buffer("noise_scale", torch.ones(()))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the source image given target ``y`` (both (N,3,H,W), images in [0, 1])."""
        s = self.stem(y * 2 - 1)
        z = self.blocks(self.down(s))
        z = self.up(F.interpolate(z, size=s.shape[-2:], mode="nearest"))
        h = self.head(torch.cat([z, s], 1)).float()
        mean = y + h[:, :3]
        log_std = h[:, 3:].clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        return mean, log_std

    @torch.no_grad()
    def sample(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One draw of a source image for each target in ``y``, in [0, 1]."""
        mean, log_std = self(y)
        eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype).to(mean.device)
        return (mean + self.noise_scale * log_std.exp() * eps).clamp(0, 1)


def mapper_loss(mapper: Mapper, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE for the mean, plus the Gaussian NLL of the log-std with the mean held fixed (stable: a joint NLL
    fit of mean and std diverges on some tasks)."""
    mean, log_std = mapper(y)
    mse = F.mse_loss(mean, x)
    resid2 = (x - mean.detach()).pow(2)
    nll = (0.5 * resid2 * torch.exp(-2 * log_std) + log_std).mean()
    return mse + 0.01 * nll
