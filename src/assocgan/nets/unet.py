"""U-Net generator (paper §3.1, pix2pix style): a stride-2 encoder of widths ngf x (1, 2, 4, 8), a decoder
with skip connections, and an output of the input's size. Images go in and out in [0, 1].

With ``residual`` (the default) the network predicts a correction of its input,
``out = x + 2 tanh(h / 2)`` in [-1, 1] units (clamped to the image range at evaluation), and its last layer
starts at zero, so an untrained network is exactly the identity and mild restorations (a slight blur, whose
input already scores high) start from the input instead of below it; without it the output is ``tanh(h)`` as in
pix2pix.

With ``context`` (on in the ``quick`` preset; ``--context off`` for the paper's plain U-Net) a small MLP reads
each input's global statistics (per-channel mean, standard deviation, 2nd and 98th percentiles) and scales and
shifts the decoder's features (FiLM). Instance normalisation removes exactly these statistics from the
features, so a plain U-Net that learns several tasks jointly cannot tell a dark or tinted input from a normal
one by its level and colour (an earlier restore4 trained jointly: 21.2 dB without the context, 23.6 dB with
it, for a few percent of a step; docs/results.md, "Which generator: screened by joint training from scratch").
The context starts inert (its last layer is zero), so an untrained network is still the identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import init_weights, norm_layer

LEVELS = 4  # four stride-2 stages: sizes must be multiples of 16


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per-image global statistics of (N, C, H, W) images in [-1, 1]: each channel's mean, standard deviation,
    and its 2nd and 98th percentiles (N, 4C): exposure, contrast and colour, which instance normalisation
    removes from the features."""
    flat = x.float().flatten(2)
    q = torch.quantile(flat, torch.tensor([0.02, 0.98], device=x.device), dim=2)  # (2, N, C)
    return torch.cat([flat.mean(2), flat.std(2), q[0], q[1]], 1)


class GlobalContext(nn.Module):
    """Per-channel scale and shift of the decoder's features from the input's global statistics (FiLM;
    Perez et al. 2018), so that a correction that depends on the whole image's exposure and colour (a dark
    image to brighten, a faded one to deepen) is not decided from instance-normalised features alone, which
    have lost them. Its last layer starts at zero: an untrained context changes nothing."""

    def __init__(self, in_ch: int, widths: list[int], hidden: int = 64):
        super().__init__()
        self.widths = widths
        self.mlp = nn.Sequential(nn.Linear(4 * in_ch, hidden), nn.ReLU(True), nn.Linear(hidden, 2 * sum(widths)))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        film = self.mlp(image_statistics(x)).split([2 * w for w in self.widths], 1)
        return [(1 + f[:, :w, None, None], f[:, w:, None, None]) for f, w in zip(film, self.widths)]


class UNet(nn.Module):
    def __init__(
        self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, norm: str = "instance", residual: bool = True, dropout: float = 0.0, context: bool = False
    ):
        super().__init__()
        widths = [ngf * m for m in (1, 2, 4, 8)]
        self.residual = residual and in_ch == out_ch
        self.down = nn.ModuleList()
        prev = in_ch
        for i, w in enumerate(widths):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(prev, w, 4, 2, 1, bias=(i == 0 or i == LEVELS - 1 or norm != "batch")))
            if 0 < i < LEVELS - 1:
                layers.append(norm_layer(norm, w))
            self.down.append(nn.Sequential(*layers))
            prev = w
        self.up = nn.ModuleList()
        for i in reversed(range(LEVELS)):
            out = widths[i - 1] if i > 0 else out_ch
            cin = widths[i] if i == LEVELS - 1 else 2 * widths[i]
            layers = [nn.ReLU(True), nn.ConvTranspose2d(cin, out, 4, 2, 1)]
            if i > 0:
                layers.append(norm_layer(norm, out))
                if dropout > 0 and i >= LEVELS - 2:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        # the decoder stages that a FiLM modulates (the global context, or a caller's ``film``): every one but the output layer
        self.film_widths = [widths[i - 1] for i in reversed(range(1, LEVELS))]
        self.context = GlobalContext(in_ch, self.film_widths) if context else None
        init_weights(self)
        if self.residual:
            # start as the identity: the last layer's correction is zero until training moves it
            last = self.up[-1][1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """``x`` translated; ``film``, per-image (scale, shift) pairs of the decoder stages (``film_widths``), modulates
        the decoder in place of the global context (a network that holds this U-Net decides them)."""
        h, w = x.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"U-Net input must be a multiple of 16 in both sides, got {h}x{w}")
        xs = x * 2 - 1
        skips = []
        z = xs
        for layer in self.down:
            z = layer(z)
            skips.append(z)
        if film is None:
            film = self.context(xs) if self.context is not None else []
        z = self.up[0](skips[-1])
        for k, (layer, skip) in enumerate(zip(self.up[1:], reversed(skips[:-1]))):
            if k < len(film):
                z = z * film[k][0].to(z.dtype) + film[k][1].to(z.dtype)
            z = layer(torch.cat([z, skip], 1))
        out = xs + 2 * torch.tanh(z.float() / 2) if self.residual else torch.tanh(z.float())
        return (out + 1) / 2


__all__ = ["UNet", "init_weights"]
