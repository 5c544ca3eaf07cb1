"""The training losses: content (MSE) and adversarial (LSGAN or vanilla)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gan_loss(pred: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    """The discriminator's loss for ``pred`` judged real (True) or fake (False); ``mode`` is lsgan or vanilla."""
    pred = pred.float()
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    if mode == "lsgan":
        return F.mse_loss(pred, target)
    return F.binary_cross_entropy_with_logits(pred, target)


def per_sample_mse(fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's mean squared error over its pixels, (N,)."""
    return (fake.float() - y.float()).pow(2).flatten(1).mean(1)


def content_loss(fake: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; with ``weight`` (one per sample, summing to 1) the weighted sum of the samples' MSEs."""
    if weight is None:
        return F.mse_loss(fake.float(), y.float())
    return (per_sample_mse(fake, y) * weight).sum()
