"""Degradations with a degree each, applied to batches of clean images in [0, 1].

A recipe names tasks separated by commas; a task is one or more degradations joined by '+':
``blur:3,noise:0.2,jpeg:10`` is three tasks, ``blur:2+noise:0.05`` is one task with both.
Random degradations (noise, the motion direction) are drawn from the generator given; the others are fixed.
Every degradation runs on the device of the images it is given (JPEG goes through PIL on the CPU and back).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..rng import rand, randn

Tensor = torch.Tensor


def to_uint8(x: Tensor) -> Tensor:
    """[0, 1] float images as uint8, as an image file stores them."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _gaussian_kernel1d(sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    ax = torch.arange(-radius, radius + 1, dtype=torch.float32)  # on the CPU: a few numbers, made once per call
    k = torch.exp(-(ax**2) / (2 * sigma**2))
    return k / k.sum()


def _depthwise(y: Tensor, kernel: Tensor) -> Tensor:
    """Convolve each channel of each image with ``kernel`` ((kh,kw) shared, or (N,kh,kw) per image), reflect-padded."""
    n, c, h, w = y.shape
    kh, kw = kernel.shape[-2:]
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    mode = "reflect" if min(h, w) > max(kh, kw) // 2 else "replicate"
    yp = F.pad(y, pad, mode=mode)
    if kernel.dim() == 2:
        return F.conv2d(yp.reshape(n * c, 1, *yp.shape[-2:]), kernel[None, None]).reshape(n, c, h, w)
    weight = kernel.repeat_interleave(c, dim=0)[:, None]  # (N*C, 1, kh, kw)
    return F.conv2d(yp.reshape(1, n * c, *yp.shape[-2:]), weight, groups=n * c).reshape(n, c, h, w)


def gaussian_blur(y: Tensor, sigma: float, gen: torch.Generator | None = None) -> Tensor:
    k = _gaussian_kernel1d(sigma)
    return _depthwise(y, torch.outer(k, k).to(y.device))


def gaussian_noise(y: Tensor, sigma: float, gen: torch.Generator | None = None) -> Tensor:
    noise = randn(y.shape, gen, y.device, y.dtype)
    return (y + sigma * noise).clamp(0, 1)


def jpeg(y: Tensor, quality: float, gen: torch.Generator | None = None) -> Tensor:
    from PIL import Image

    q = int(round(quality))
    out = torch.empty(y.shape, dtype=y.dtype)  # through PIL on the CPU, image by image
    arr = to_uint8(y).permute(0, 2, 3, 1).cpu().numpy()
    for i, a in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out[i] = torch.from_numpy(dec.copy()).permute(2, 0, 1).float() / 255
    return out.to(y.device)


def downscale(y: Tensor, factor: float, gen: torch.Generator | None = None) -> Tensor:
    h, w = y.shape[-2:]
    small = F.interpolate(y, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def motion_blur(y: Tensor, length: float, gen: torch.Generator | None = None) -> Tensor:
    """Linear motion blur of ``length`` pixels in a random direction per image."""
    n = y.shape[0]
    size = int(length) | 1
    r = (size - 1) / 2
    ax = torch.arange(size, dtype=torch.float32, device=y.device) - r
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    angles = rand(n, gen, y.device) * math.pi
    c, s = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    dist = (xx[None] * s - yy[None] * c).abs()  # distance from the line through the centre
    along = (xx[None] * c + yy[None] * s).abs()
    k = ((1 - dist).clamp(min=0)) * (along <= r + 1e-6)
    k = k / k.sum(dim=(1, 2), keepdim=True)
    return _depthwise(y, k)


LOWLIGHT_GAMMA = 1.4


def lowlight(y: Tensor, gain: float, gen: torch.Generator | None = None) -> Tensor:
    """Under-exposure: ``gain * y ** 1.4`` (a darker, lower-contrast image)."""
    return gain * y.clamp(0, 1).pow(LOWLIGHT_GAMMA)


def impulse(y: Tensor, rate: float, gen: torch.Generator | None = None) -> Tensor:
    """Salt-and-pepper (impulse) noise: each pixel, with probability ``rate``, turns black or white (all three
    channels alike, black or white with even odds), as a faulty sensor or transmission leaves them."""
    n, _, h, w = y.shape
    u = rand((n, 1, h, w), gen, y.device, y.dtype)
    hit = u < rate
    white = u < rate / 2
    return torch.where(hit, white.to(y.dtype), y)


def oversharpen(y: Tensor, amount: float, gen: torch.Generator | None = None) -> Tensor:
    """Over-sharpening (an unsharp mask pushed too far): ``y + amount * (y - blur(y, 1.5))``, clamped, with
    the halos and amplified texture of a phone's or scanner's sharpening."""
    return (y + amount * (y - gaussian_blur(y, 1.5))).clamp(0, 1)


CAST_GAIN = (0.30, 0.05, -0.35)
CAST_OFFSET = (0.06, 0.03, -0.02)


def colorcast(y: Tensor, strength: float, gen: torch.Generator | None = None) -> Tensor:
    """A warm colour cast: each channel scaled and shifted (red up, blue down) by ``strength``."""
    gain = 1 + strength * torch.tensor(CAST_GAIN, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    offset = strength * torch.tensor(CAST_OFFSET, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return (y * gain + offset).clamp(0, 1)


FADE_TINT = (0.85, 0.75, 0.55)


def fade(y: Tensor, amount: float, gen: torch.Generator | None = None) -> Tensor:
    """A faded, yellowed print: ``(1 - a) * y + a * tint`` with a warm tint, so blacks are lifted and contrast
    lost (an image no natural photo looks like: its darkest pixels are ``a * tint``)."""
    tint = torch.tensor(FADE_TINT, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return (1 - amount) * y + amount * tint


@dataclass(frozen=True)
class Kind:
    fn: Callable[[Tensor, float, torch.Generator | None], Tensor]
    degree: str
    low: float
    high: float
    random: bool


KINDS: dict[str, Kind] = {
    "blur": Kind(gaussian_blur, "Gaussian sigma in pixels", 0.1, 20, False),
    "noise": Kind(gaussian_noise, "Gaussian noise sigma on [0,1] images", 0.001, 1, True),
    "jpeg": Kind(jpeg, "JPEG quality (1-95, lower is worse)", 1, 95, False),
    "downscale": Kind(downscale, "downscale factor (>1), upsampled back bicubically", 1.01, 16, False),
    "motion": Kind(motion_blur, "motion blur length in pixels, random direction", 2, 41, True),
    "impulse": Kind(impulse, "salt-and-pepper rate: the share of pixels turned black or white", 0.001, 0.9, True),
    "oversharpen": Kind(oversharpen, "unsharp-mask amount (y + a*(y - blur_1.5(y)), too much sharpening)", 0.1, 10, False),
    "lowlight": Kind(lowlight, f"under-exposure gain a in a*y^{LOWLIGHT_GAMMA} (<1 is darker)", 0.05, 1, False),
    "colorcast": Kind(colorcast, "colour-cast strength (1 is a strong warm cast)", 0.05, 2, False),
    "fade": Kind(fade, f"fading amount a in (1-a)*y + a*{FADE_TINT} (a faded, yellowed print)", 0.05, 0.9, False),
}


@dataclass(frozen=True)
class Degradation:
    """One task's degradation: one or more (kind, degree) steps applied in order."""

    steps: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        return "+".join(f"{k}{_fmt(d)}" for k, d in self.steps)

    @property
    def random(self) -> bool:
        return any(KINDS[k].random for k, _ in self.steps)

    def __call__(self, y: Tensor, gen: torch.Generator | None = None) -> Tensor:
        x = y
        for kind, degree in self.steps:
            x = KINDS[kind].fn(x, degree, gen)
        return x


def _fmt(d: float) -> str:
    return f"{d:g}"


def parse_recipe(recipe: str, option: str = "--recipe") -> list[Degradation]:
    """Parse ``blur:3,noise:0.2,jpeg:10`` into one Degradation per task."""
    tasks = []
    for item in [s.strip() for s in recipe.split(",")]:
        if not item:
            raise UserError(f"{option} {recipe!r}: empty task between commas")
        steps = []
        for part in item.split("+"):
            kind, _, degree = part.strip().partition(":")
            kind = kind.strip().lower()
            if kind not in KINDS:
                raise UserError(f"{option}: unknown degradation {kind!r} in {item!r}; known: {', '.join(KINDS)}")
            spec = KINDS[kind]
            try:
                value = float(degree)
            except ValueError:
                raise UserError(f"{option}: {part.strip()!r} needs a number after ':' ({spec.degree})") from None
            if not spec.low <= value <= spec.high:
                raise UserError(f"{option}: {kind} degree {value:g} is outside [{spec.low:g}, {spec.high:g}] ({spec.degree})")
            steps.append((kind, value))
        tasks.append(Degradation(tuple(steps)))
    return tasks
