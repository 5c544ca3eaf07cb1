"""Networks: the generators (a registry of architectures, ``--arch``), the conditional PatchGAN discriminator,
the mapping-memory mapper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from .gated import GatedUNet
from .patchgan import PatchGAN
from .unet import UNet, init_weights


@dataclass(frozen=True)
class Arch:
    """One generator architecture: its name (``--arch``), a line for ``--help`` and docs, and how it is built
    from the run's configuration (``ngf``, ``norm``, ``residual``, ``context``)."""

    name: str
    help: str
    build: Callable[[Any], nn.Module]


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            "pix2pix",
            "the paper's U-Net (pix2pix), with the global context when --context is on",
            lambda cfg: UNet(3, 3, cfg.ngf, norm=cfg.norm, residual=cfg.residual, context=cfg.context),
        ),
        Arch(
            "gated",
            "the U-Net behind a gate inferred from the input: per-expert colour transforms, decoder FiLM and correction gains",
            lambda cfg: GatedUNet(3, 3, cfg.ngf, norm=cfg.norm, residual=cfg.residual),
        ),
    )
}


def build_generator(cfg: Any) -> nn.Module:
    """The generator of ``cfg.arch`` (a saved configuration without one: the pix2pix U-Net)."""
    return ARCHS[getattr(cfg, "arch", "pix2pix")].build(cfg)


__all__ = ["ARCHS", "Arch", "build_generator", "UNet", "GatedUNet", "PatchGAN", "init_weights"]
