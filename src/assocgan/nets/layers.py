"""Small pieces shared by the networks."""

from __future__ import annotations

import contextlib

import torch.nn as nn

NORMS = ("instance", "batch", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


@contextlib.contextmanager
def no_weight_grads(net: nn.Module):
    """Within the block, gradients flow through ``net`` to its inputs but not into its weights (a generator's
    adversarial step through its discriminator)."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p in params:
            p.requires_grad_(True)
