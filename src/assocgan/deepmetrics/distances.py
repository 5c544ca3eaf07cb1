"""LPIPS and DISTS: per-image perceptual distances from a pretrained backbone's features. Lower is better; 0 for
identical images.

Both take ``pred`` and ``target`` as (N, 3, H, W) tensors in [0, 1] and return one value per image, an (N,) tensor.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import UserError
from . import weights
from .backbones import VGG16, AlexNet, Backbone, load_torchvision

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10  # lpips.normalize_tensor's
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DISTS_C1 = DISTS_C2 = 1e-6


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected two (N,3,H,W) tensors of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def unit_normalize(x: torch.Tensor, eps: float = LPIPS_EPS) -> torch.Tensor:
    """Each spatial position's feature vector divided by its L2 norm along channels (lpips.normalize_tensor)."""
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) with an AlexNet (``net="alex"``) or VGG16 (``net="vgg"``) backbone:

    d(x, y) = sum_l mean_hw( w_l . (f_l(x) - f_l(y))^2 ),  f_l the unit-normalised (along channels) activations of
    tap l of the backbone on the [-1, 1]-scaled, ScalingLayer-normalised image, w_l the learned 1x1 ``lin<l>``.

    Needs torchvision's backbone weights and the lpips package's ``weights/v0.1/<net>.pth`` (see ``weights``).
    """

    def __init__(self, net: str = "alex", weights_dir: str | os.PathLike | None = None):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"net must be 'alex' or 'vgg', not {net!r}")
        self.net_name = net
        backbone_names = weights.ALEXNET if net == "alex" else weights.VGG16
        backbone_path, lin_path = weights.find_weights(f"LPIPS ({net})", [backbone_names, weights.LPIPS_LIN[net]], weights_dir)
        self.net: Backbone = AlexNet() if net == "alex" else VGG16()
        load_torchvision(self.net, weights.load(backbone_path), str(backbone_path))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.net.channels)
        self.load_lins(weights.load(lin_path), str(lin_path))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def load_lins(self, state: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Loads the lpips package's ``lin<l>.model.1.weight`` entries, shapes (1, C_l, 1, 1)."""
        for i, lin in enumerate(self.lins):
            key = f"lin{i}.model.1.weight"
            w = state.get(key)
            if w is None or tuple(w.shape) != tuple(lin.weight.shape):
                got = "missing" if w is None else f"shape {tuple(w.shape)}"
                raise UserError(f"{source}: not the lpips package's {self.net_name} weights ({key} {got}, expected shape {tuple(lin.weight.shape)})")
            lin.weight.data.copy_(w)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's taps on images in [0, 1] (scaled to [-1, 1], then shifted and scaled)."""
        return self.net.taps((images * 2 - 1 - self.shift) / self.scale)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(pred, target)
        dev = self.shift.device
        f0, f1 = self.features(pred.to(dev, torch.float32)), self.features(target.to(dev, torch.float32))
        total = 0
        for lin, a, b in zip(self.lins, f0, f1):
            total = total + lin((unit_normalize(a) - unit_normalize(b)) ** 2).mean(dim=(2, 3))
        return total[:, 0]


class DISTS(nn.Module):
    """DISTS (Ding et al. 2020): VGG16 with L2 pooling; on the image and 5 stages (3+64+128+256+512+512 = 1475
    channels), per channel i the texture term S1 = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) and the structure term
    S2 = (2 cov_xy + c2) / (var_x + var_y + c2) over space, and

    d(x, y) = 1 - sum_i (alpha_i S1_i + beta_i S2_i) / sum_i (alpha_i + beta_i).

    Needs torchvision's ``vgg16-397923af.pth`` and DISTS_pytorch's ``weights.pt`` (``alpha``, ``beta``).
    """

    def __init__(self, weights_dir: str | os.PathLike | None = None):
        super().__init__()
        vgg_path, ab_path = weights.find_weights("DISTS", [weights.VGG16, weights.DISTS], weights_dir)
        self.net = VGG16(pool="l2")
        load_torchvision(self.net, weights.load(vgg_path), str(vgg_path))
        self.chns = (3,) + self.net.channels
        n = sum(self.chns)
        self.alpha = nn.Parameter(torch.zeros(1, n, 1, 1), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(1, n, 1, 1), requires_grad=False)
        self.load_alpha_beta(weights.load(ab_path), str(ab_path))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def load_alpha_beta(self, state: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Loads DISTS_pytorch's ``alpha`` and ``beta``, each (1, 1475, 1, 1)."""
        for key in ("alpha", "beta"):
            w, p = state.get(key), getattr(self, key)
            if w is None or tuple(w.shape) != tuple(p.shape):
                got = "missing" if w is None else f"shape {tuple(w.shape)}"
                raise UserError(f"{source}: not DISTS_pytorch's weights ({key} {got}, expected shape {tuple(p.shape)})")
            p.data.copy_(w)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The image itself (unnormalised, as DISTS_pytorch) and the 5 stages' outputs on the normalised image."""
        return [images] + self.net.taps((images - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(pred, target)
        dev = self.mean.device
        f0, f1 = self.features(pred.to(dev, torch.float32)), self.features(target.to(dev, torch.float32))
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, self.chns, dim=1)
        betas = torch.split(self.beta / w_sum, self.chns, dim=1)
        texture = structure = 0
        for x, y, alpha, beta in zip(f0, f1, alphas, betas):
            mx, my = x.mean((2, 3), keepdim=True), y.mean((2, 3), keepdim=True)
            s1 = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
            texture = texture + (alpha * s1).sum(1, keepdim=True)
            vx, vy = ((x - mx) ** 2).mean((2, 3), keepdim=True), ((y - my) ** 2).mean((2, 3), keepdim=True)
            cxy = (x * y).mean((2, 3), keepdim=True) - mx * my
            s2 = (2 * cxy + DISTS_C2) / (vx + vy + DISTS_C2)
            structure = structure + (beta * s2).sum(1, keepdim=True)
        return 1 - (texture + structure).flatten()
