"""The mapping-memory mapper M_j: y -> x, the inverse of task j (paper §3.2; CycleGAN's ResNet-generator design,
scaled down).

It predicts, per pixel, a Gaussian over the source image, a mean (as a correction of y) and a log standard
deviation, mixed with an impulse: the probability that the source pixel is an outlier turned black or white in
all its channels (salt-and-pepper noise, dead or hot pixels), and the odds that such a pixel is white. Sampling
``mean + scale * std * eps`` and then the impulses reproduces random degradations (noise, JPEG, impulse noise)
instead of their average, which a plain L1/MSE mapper would produce (a clean image). A Gaussian alone cannot
stand for impulses: its samples of an impulse task are speckled with colour noise, which a generator then
learns to remove instead of the impulses (docs/results.md, "restore4 (3 seeds, ...)", "The impulse component
of the mappers"). No normalisation layers: brightness and colour are what
several degradations change, and instance statistics would erase them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..metrics import noise_sigma
from ..rng import rand, randn
from .unet import image_statistics


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
    sees each pixel's exact colour (tone curves, colour casts). A 1x1 head joins them into a mean correction, a
    log-std, an impulse logit and a white-impulse logit. No 3x3 convolution runs at full resolution, so a mapper costs a fraction of a U-Net step.
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
        self.head = nn.Sequential(nn.Conv2d(k + c, c, 1), nn.ReLU(True), nn.Conv2d(c, 8, 1))
        # PyTorch's default (Kaiming-uniform) initialisation: without normalisation layers, pix2pix's N(0, 0.02)
        # would shrink the activations layer after layer and slow training many times over
        last = self.head[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():  # the mean starts at y, the std small, impulses rare
            last.bias.zero_()
            last.bias[3:6].fill_(-3.0)
            last.bias[6].fill_(-9.0)
        # a per-mapper scale of the sampled noise and a shift of the impulse logit, set after training from the
        # stored pairs (0 and a large negative shift: a deterministic task without impulses)
        self.register_buffer("noise_scale", torch.ones(()))
        self.register_buffer("impulse_shift", torch.zeros(()))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the source image given target ``y`` (both (N,3,H,W), images in [0, 1]; H, W even)."""
        mean, log_std, _ = self.params(y)
        return mean, log_std

    def params(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-std (N,3,H,W) and impulse logits (N,2,H,W: an outlier at all, and a white one) of the source
        image given target ``y``."""
        ys = (y * 2 - 1).contiguous(memory_format=torch.channels_last)  # 1.3-1.5x faster convolutions on the CPU
        s = self.stem(F.pixel_unshuffle(ys, 2))
        z = self.blocks(self.down(s))
        z = self.up(F.interpolate(z, size=s.shape[-2:], mode="nearest"))
        context = F.pixel_shuffle(self.unfold(torch.cat([z, s], 1)), 2)
        h = self.head(torch.cat([context, self.pixel(ys)], 1)).float()
        mean = y + h[:, :3]
        log_std = h[:, 3:6].clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        return mean, log_std, torch.cat([h[:, 6:7] + self.impulse_shift, h[:, 7:]], 1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One draw of a source image for each target in ``y``, in [0, 1]."""
        mean, log_std, logits = self.params(y)
        eps = randn(mean.shape, gen, mean.device, mean.dtype)  # on gen's device: the device's own stream in training
        x = (mean + self.noise_scale * log_std.exp() * eps).clamp(0, 1)
        u = rand((y.shape[0], 2, *y.shape[2:]), gen, mean.device, logits.dtype)
        hit, white = u[:, :1] < torch.sigmoid(logits[:, :1]), u[:, 1:] < torch.sigmoid(logits[:, 1:])
        return torch.where(hit, white.to(x.dtype), x)


IMPULSE_GAP = 0.25  # a source pixel black or white in every channel counts as an impulse this far from its target


def impulses(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where source ``x`` holds an impulse, (N,1,H,W) booleans: a pixel black (or white) in all channels whose
    target is not (some channel at least ``IMPULSE_GAP`` away); and where the source pixel is white."""
    black, white = (x <= 0).all(1, keepdim=True), (x >= 1).all(1, keepdim=True)
    far = (x - y).abs().amax(1, keepdim=True) >= IMPULSE_GAP
    return (black | white) & far, white


@torch.no_grad()
def impulse_shift_for(logits: torch.Tensor, share: float) -> float:
    """The shift of the impulse logits (N,1,H,W) that makes their mean probability ``share`` (bisection), or a
    shift that turns impulses off when ``share`` is 0."""
    if share <= 0:
        return -40.0
    lo, hi = -40.0, 40.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if float(torch.sigmoid(logits.float() + mid).mean()) > share else (mid, hi)
    return (lo + hi) / 2


def mapper_loss(mapper: Mapper, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE for the mean, plus the Gaussian NLL of the log-std with the mean held fixed (stable: a joint NLL
    fit of mean and std diverges on some tasks), both on the pixels that are not impulses; plus the
    cross-entropy of the impulse probability everywhere and of an impulse being white where there is one."""
    mean, log_std, logits = mapper.params(y)
    hit, white = impulses(x, y)
    keep = (~hit).to(x.dtype)
    n = keep.sum().clamp_min(1) * x.shape[1]
    mse = ((mean - x).pow(2) * keep).sum() / n
    resid2 = (x - mean.detach()).pow(2)
    nll = ((0.5 * resid2 * torch.exp(-2 * log_std) + log_std) * keep).sum() / n
    bce = F.binary_cross_entropy_with_logits(logits[:, :1], hit.to(logits.dtype))
    if hit.any():
        bce = bce + F.binary_cross_entropy_with_logits(logits[:, 1:][hit], white[hit].to(logits.dtype))
    return mse + 0.01 * nll + 0.1 * bce


def random_crop(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` x ``size`` window of each pair (whole images when ``size`` is 0 or too large)."""
    h, w = x.shape[-2:]
    if size <= 0 or size >= min(h, w):
        return x, y
    size -= size % 2
    top = int(torch.randint(0, h - size + 1, (), generator=gen))
    left = int(torch.randint(0, w - size + 1, (), generator=gen))
    return x[..., top : top + size, left : left + size], y[..., top : top + size, left : left + size]


class MapperTraining:
    """A mapper being trained on one task, with its optimiser (Adam, cosine decay over ``steps``), the random
    stream its crops are drawn from (``gen``, a stream of its own: when and where it trains changes no draw the
    generator sees) and how far it has come. Assoc-GAN advances it a share of steps with each batch (``due``), so
    it trains beside the generator; the task router (``assocgan.router``) trains it after the task."""

    def __init__(self, mapper: Mapper, steps: int, lr: float, gen: torch.Generator):
        self.mapper, self.steps, self.gen = mapper, steps, gen
        self.opt = torch.optim.Adam(mapper.parameters(), lr=lr, betas=(0.9, 0.99), foreach=True)  # foreach: 10% faster on the CPU
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, steps)
        self.done = self.batches = 0  # mapper steps taken, batches made in this task
        self.loss = float("nan")
        self.beside = True  # trained a share of steps with each batch (else all after the task)

    def due(self, task_steps: int) -> int:
        """After one more batch of a task of ``task_steps`` batches: the mapper steps owed by now (its share)."""
        self.batches += 1
        return min(self.steps, math.ceil(self.steps * self.batches / task_steps))

    def step(self, task, batch: int, crop: int, device: torch.device) -> None:
        """One training step on random ``crop`` windows of ``batch`` pairs of ``task`` (float32: in bf16 the
        mapper learns its task worse; docs/results.md, "restore4 (3 seeds, ...)", "The mapper in float32")."""
        x, y = random_crop(*task.sample(batch, self.gen), crop, self.gen)
        loss = mapper_loss(self.mapper, y.to(device), x.to(device))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.done += 1
        self.loss = float(loss.detach())

    def state_dict(self) -> dict:
        return {
            "mapper": self.mapper.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "steps": self.steps,
            "done": self.done,
            "batches": self.batches,
            "loss": self.loss,
            "beside": self.beside,
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.mapper.load_state_dict(state["mapper"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.done, self.batches, self.loss, self.beside = state["done"], state["batches"], state["loss"], state["beside"]
        self.gen.set_state(state["gen"])


@torch.no_grad()
def calibrate(mapper: Mapper, task, gen: torch.Generator, device: torch.device, n: int = 64) -> None:
    """Fit the mapper's randomness to the task's own, measured on ``n`` of its stored pairs alone (drawn with ``gen``).

    Noise: the scale of the sampled noise so that its variance is the white-noise variance
    (``metrics.noise_sigma``) that the stored sources have beyond the mapper's mean for the same targets. A
    random degradation (noise) leaves it in the sources and not in the mean; a deterministic one (blur, a
    tone curve, a colour shift) leaves none, so its mapper adds no noise the task never had. Impulses: the
    shift of the impulse logit that makes the mapper's mean impulse probability the share of impulse pixels
    in the stored sources (none: no impulses drawn)."""
    idx = torch.randperm(task.n_train, generator=gen)[:n]
    x, y = task.stored_pairs(idx)
    hit, _ = impulses(x, y)
    clean = (~hit).to(x.dtype)
    mean, log_std, logits = mapper.params(y.to(device))
    mean = mean.float().cpu().clamp(0, 1)
    # impulse pixels are not the task's Gaussian noise: measure the noise with them set to the mapper's mean
    excess = noise_sigma(x * clean + mean * (1 - clean)).pow(2) - noise_sigma(mean).pow(2)
    var_task = max(float(excess.mean()), 0.0)
    var_model = float(log_std.float().mul(2).exp().mean())
    mapper.noise_scale.fill_((var_task / max(var_model, 1e-12)) ** 0.5)
    mapper.impulse_shift.fill_(impulse_shift_for(logits[:, :1].cpu(), float(hit.float().mean())))


def domain_features(x: torch.Tensor) -> torch.Tensor:
    """What tells image domains apart, per image (N, 14): each channel's mean, spread and 2nd/98th percentiles,
    the white-noise level and the mean absolute gradient (sharpness)."""
    x = x.float()
    grad = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    return torch.cat([image_statistics(x), noise_sigma(x)[:, None], grad[:, None]], 1)


class DomainSignature:
    """The mean and spread of ``domain_features`` over a task's training targets (28 numbers): kept after the
    task, it says how far other images lie from that task's target domain."""

    def __init__(self, images: torch.Tensor):
        f = domain_features(images)
        self.mean, self.std = f.mean(0), f.std(0).clamp_min(1e-3)

    @classmethod
    def of(cls, mean: torch.Tensor, std: torch.Tensor) -> DomainSignature:
        sig = cls.__new__(cls)
        sig.mean, sig.std = mean, std
        return sig

    @property
    def nbytes(self) -> int:
        return 4 * (self.mean.numel() + self.std.numel())

    def distance(self, images: torch.Tensor) -> float:
        """How far a batch of ``images`` lies from the domain: the squared z-score of the batch's mean features
        against the domain's (standard error of a mean of ``len(images)``), averaged over features: about 1 for
        a batch of the domain, far more for another (a blurred, faded or tinted batch of photos whose single
        images would all pass for photos)."""
        f = domain_features(images)
        return float((len(f) * ((f.mean(0) - self.mean) / self.std).pow(2)).mean())


def plan_domains(signatures: list[DomainSignature], mappers: list[Mapper], x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[int, str | int]:
    """For each past task j (the latest first), which image made from the current pairs (x, y) lies in task j's
    target domain: the current target ``"target"``, the current input ``"input"``, or ``k``, what a later past
    task's mapper M_k makes of task k's pick (its mean), whichever ``signatures[j]`` finds nearest. Assoc-GAN's
    association samples and the task router's imitations of past inputs start from these images."""
    images: dict[str | int, torch.Tensor] = {"target": y, "input": x}
    plan: dict[int, str | int] = {}
    with torch.no_grad():
        for j in reversed(range(len(mappers))):
            plan[j] = min(images, key=lambda ref: signatures[j].distance(images[ref]))
            images[j] = mappers[j](images[plan[j]].to(device))[0].float().clamp(0, 1).cpu()
    return plan


def domain_images(plan: dict[int, str | int], mappers: list[Mapper], j: int, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The images in past task j's target domain made from the current pairs (x, y) as ``plan`` says (a mapper's
    image drawn with ``gen``)."""
    ref = plan[j]
    if ref == "target":
        return y
    if ref == "input":
        return x
    return mappers[ref].sample(domain_images(plan, mappers, ref, x, y, gen), gen).float()


# ---- colours a chain of mappers cannot give back ----------------------------------------------------------------
COLOUR_LOST = 1 / 3  # a task whose targets keep less than this share of its sources' colour loses it


def recolour(x: torch.Tensor, gen: torch.Generator, saturation: float = 2.0) -> torch.Tensor:
    """Images ``x`` (N,3,H,W in [0, 1]) with new colours drawn for each: its colours about the grey axis turned by
    a uniform angle (any hue) and their saturation scaled by a uniform factor in [1, ``saturation``], its grey
    level kept."""
    n = x.shape[0]
    angle = (rand((n,), gen, x.device) * 2 - 1) * math.pi
    scale = 1 + rand((n,), gen, x.device) * (saturation - 1)
    k = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=x.device) / math.sqrt(3)  # cross product with the grey axis
    eye = torch.eye(3, device=x.device)
    turn = eye + angle.sin()[:, None, None] * k + (1 - angle.cos())[:, None, None] * (k @ k)  # Rodrigues' rotation about it
    grey = x.mean(1, keepdim=True)
    return (grey + scale[:, None, None, None] * torch.einsum("nij,njhw->nihw", turn, x - grey)).clamp(0, 1)


def colourfulness(images: torch.Tensor) -> float:
    """How coloured images (N,3,H,W, uint8 or [0, 1]) are: the mean distance of a pixel's channels from its grey
    level, on 4x4 averages (so that noise adds little)."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    x = F.avg_pool2d(x, 4) if min(x.shape[-2:]) >= 4 else x
    return float((x - x.mean(1, keepdim=True)).abs().mean())


def colour_kept(x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of the sources' colour that a task's targets keep (above 1: the task adds colour; 1 where the
    sources have none to lose)."""
    source = colourfulness(x)
    return colourfulness(y) / source if source > 1e-3 else 1.0


def recoloured(plan: dict[int, str | int], j: int, kept: list[float]) -> bool:
    """Whether past task j's imitated inputs get new colours (``recolour``): where ``plan`` reaches its target domain
    through a later task's mapper and the task loses colour (``kept[j]``, its ``colour_kept``, under
    ``COLOUR_LOST``), so that the colours its mapper gives are guessed from images that no longer hold them (a
    photo made from a sketch made from a blueprint). Assoc-GAN's association inputs and the task router's
    imitations of past inputs alike."""
    return isinstance(plan.get(j), int) and kept[j] < COLOUR_LOST
