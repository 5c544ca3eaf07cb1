"""AlexNet and VGG16 feature extractors with torchvision's exact layer layout.

``AlexNet().features`` and ``VGG16().features`` number their modules as torchvision's ``alexnet().features`` and
``vgg16().features`` do, so the ``features.*`` keys of a torchvision state dict (the hub cache's
``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) load with strict key matching (``load_torchvision``). Only
the convolutional part is built: the perceptual metrics use no classifier.

``VGG16(pool="l2")`` swaps its max poolings for DISTS's L2 pooling (a 3x3 Hanning window, stride 2, padding 1),
which has no parameters: the same state dict loads into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

# The indices of the modules after which the feature taps are read (the ReLUs named below).
ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1 .. relu5
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
ALEX_CHANNELS = (64, 192, 384, 256, 256)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class L2Pooling(nn.Module):
    """DISTS's L2 pooling: sqrt(conv(x^2, g) + 1e-12) per channel, g the normalised outer product of
    ``hanning(5)[1:-1]`` = (.5, 1, .5), stride 2, padding 1 (DISTS_pytorch's ``L2pooling(filter_size=5)``)."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
        g = a[:, None] * a[None, :]
        g = (g / g.sum()).float()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class Backbone(nn.Module):
    """A ``features`` stack and the indices of its taps; ``taps(x)`` returns the tapped activations."""

    tap_indices: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()
    features: nn.Sequential

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, last = [], self.tap_indices[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.tap_indices:
                out.append(x)
            if i == last:
                break
        return out


class AlexNet(Backbone):
    """torchvision's ``AlexNet.features`` (indices 0..12); taps relu1..relu5."""

    tap_indices = ALEX_TAPS
    channels = ALEX_CHANNELS

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )


class VGG16(Backbone):
    """torchvision's ``VGG16.features`` (indices 0..30, no batch norm); taps relu1_2 .. relu5_3. ``pool="l2"``
    puts DISTS's ``L2Pooling`` at the pooling indices (4, 9, 16, 23, 30)."""

    tap_indices = VGG16_TAPS
    channels = VGG16_CHANNELS

    def __init__(self, pool: str = "max"):
        super().__init__()
        if pool not in ("max", "l2"):
            raise ValueError(f"pool must be 'max' or 'l2', not {pool!r}")
        layers: list[nn.Module] = []
        c = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2) if pool == "max" else L2Pooling(c))
            else:
                layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)


def load_torchvision(backbone: Backbone, state: dict[str, torch.Tensor], source: str = "the state dict") -> Backbone:
    """Loads the ``features.*`` entries of a torchvision state dict into ``backbone`` with strict key matching
    (other entries, the classifier's, are ignored); a ``UserError`` naming ``source`` when they do not fit."""
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    try:
        backbone.features.load_state_dict(features, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(f"{source}: not torchvision's {type(backbone).__name__} layout ({' '.join(s.strip() for s in first[:3])})") from e
    return backbone.eval().requires_grad_(False)
