"""Conditional PatchGAN discriminator (pix2pix): sees the source and a target (real or generated) side by side
and scores overlapping patches. The number of stride-2 layers shrinks for small images so that at least a
2x2 grid of patches remains."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .layers import init_weights, norm_layer


class PatchGAN(nn.Module):
    def __init__(self, in_ch: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "instance", image_size: int | None = None):
        super().__init__()
        if image_size is not None:
            n_layers = max(1, min(n_layers, int(math.log2(image_size)) - 4))
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=norm != "batch"), norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y], 1) * 2 - 1)
