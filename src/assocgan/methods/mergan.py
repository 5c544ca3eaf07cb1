"""MeRGAN (Wu et al. [45]): generative replay with replay alignment.

*Original.* Memory Replay GANs learn a class-conditional GAN on categories that arrive one after another.
Before a new category is learned, the generator is frozen; its samples of the old categories are mixed into
the new training data (joint training with replay, JTR) and a replay-alignment term (RA) keeps the new
generator's output equal to the frozen one's for the same noise and condition.

*Here.* Our generator translates x -> y and cannot make past inputs, so MeRGAN's generator becomes a small
task-conditional GAN of *source images*: ``S(z, j)`` makes an x that looks like task j's inputs, judged by a
small conditional critic. It trains alongside G, one update per G step on the same batch, with the batch's
task labels; from task 2 on that batch holds samples of the frozen previous ``S`` for the past tasks, so the
source GAN is trained with its own replay and does not forget them (MeRGAN's JTR, applied to S). While task
t > 1 trains, a share of each batch (default t / (t + 1), as JL) is replay: x~ = S_prev(z, j) for a past
task j drawn uniformly, with the pseudo-target y~ = G_prev(x~) of the generator frozen after the previous
task. MeRGAN's two mechanisms stay two options, as in Wu et al.: joint training with replay (JTR,
``--mergan-jtr``) makes the replayed pairs training data of the adversarial game (the discriminator judges
them as real pairs and G's adversarial term covers G(x~)); replay alignment (RA, ``--mergan-align``) is the
pixel term ``align * MSE(G(x~), G_prev(x~))``, weighted by the replayed share of the batch, so that at 1 the
current and replayed samples weigh as in joint training. A paired translator's content loss on a replayed pair
would be that same alignment term, so the replayed samples stay out of the content loss and RA alone carries
it. Without the adversarial term (the ``quick`` preset) JTR has nothing to act on and RA does all the work.

So that the source GAN learns from the few updates it gets, two things are added to a plain conditional GAN:
per-pixel noise with a learned per-task amplitude (so that noisy inputs can be reproduced), and a term
(``--mergan-moments``) matching, task by task, simple statistics of its samples to those of the batch's
sources: per-colour mean and standard deviation and mean absolute neighbour differences (brightness, colour
cast, contrast, sharpness or noise). Extra work per G step: one update of the source GAN, and on replayed rows
one sample of S_prev and one forward pass of G_prev (what that costs a step: docs/results.md, "How the baselines
were set up").

*Memory.* Between tasks it keeps the source generator and its critic (float32, as they go on training) and
the previous G (float16, ``FrozenTeacher``). None of it grows with the number of tasks: the task conditioning
is sized for the benchmark's tasks from the start. The frozen S_prev is a working copy made from the stored S
at the start of a task and dropped at its end; the source GAN's optimiser is made anew for each task. Sizes at
the defaults: docs/results.md, "How the baselines were set up".
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import gan_loss
from ..memory import module_bytes
from ..nets.layers import no_weight_grads
from ..rng import randn
from .base import Batch, Method, Option
from .helpers import FrozenTeacher
from .replay import past_share, replay_count


def upsampling_plan(size: int) -> tuple[int, int]:
    """(k, s0): k stride-2 stages from an s0 x s0 start (s0 >= 4) up to ``size``."""
    k = 0
    while size % 2 ** (k + 1) == 0 and size // 2 ** (k + 1) >= 4:
        k += 1
    return k, size // 2**k


def one_hot_maps(labels: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    return F.one_hot(labels, n).float()[:, :, None, None].expand(-1, -1, h, w)


class SourceGenerator(nn.Module):
    """A small task-conditional image generator: (z, per-pixel noise, task) -> a 3 x size x size image in [0, 1].

    A linear layer makes an s0 x s0 map from [z, one-hot task]; each of k stages doubles the size
    (nearest upsampling + 3x3 convolution, no normalisation so that each sample keeps its own colours). Per-pixel
    noise, one plane per colour scaled by a learned per-task amplitude, is added before the output
    nonlinearity, so that the pixel-level randomness of inputs such as noisy photos can be reproduced."""

    AMP_SCALE = 20.0

    def __init__(self, n_tasks: int, size: int, width: int = 16, nz: int = 32):
        super().__init__()
        self.n_tasks, self.nz, self.size = n_tasks, nz, size
        k, self.s0 = upsampling_plan(size)
        ch = [width * 2 ** max(k - 1 - i, 0) for i in range(k + 1)]
        self.fc = nn.Linear(nz + n_tasks, ch[0] * self.s0 * self.s0)
        layers: list[nn.Module] = []
        for i in range(k):
            layers += [nn.LeakyReLU(0.2, True), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i + 1], 3, 1, 1)]
        layers += [nn.LeakyReLU(0.2, True), nn.Conv2d(ch[-1], 3, 3, 1, 1)]
        self.body = nn.Sequential(*layers)
        self.noise_amp = nn.Parameter(torch.full((n_tasks, 3), 0.05 / self.AMP_SCALE))  # x AMP_SCALE: a faster step
        self.ch0 = ch[0]

    def forward(self, z: torch.Tensor, pixel_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``labels``: task indices, or (n, n_tasks) task probabilities (a soft condition)."""
        cond = F.one_hot(labels, self.n_tasks).float() if labels.dtype == torch.long else labels.float()
        h = self.fc(torch.cat([z, cond.to(z.dtype)], 1))
        h = self.body(h.view(-1, self.ch0, self.s0, self.s0)).float()
        return torch.sigmoid(h + pixel_noise * (self.AMP_SCALE * cond @ self.noise_amp)[:, :, None, None])

    def noise(self, n: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The random inputs of ``n`` samples: z and per-pixel noise planes, drawn from ``gen``."""
        return randn((n, self.nz), gen, device), randn((n, 3, self.size, self.size), gen, device)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        dev = next(self.parameters()).device
        return self(*self.noise(labels.shape[0], gen, dev), labels.to(dev))


class SourceCritic(nn.Module):
    """A small conditional patch critic for source images: sees an image and its task as one-hot planes."""

    def __init__(self, n_tasks: int, width: int = 16, layers: int = 3):
        super().__init__()
        self.n_tasks = n_tasks
        mods: list[nn.Module] = []
        c_in = 3 + n_tasks
        for i in range(layers):
            c_out = width * 2**i
            mods += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in = c_out
        mods.append(nn.Conv2d(c_in, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x * 2 - 1, one_hot_maps(labels, self.n_tasks, *x.shape[-2:]).to(x.dtype)], 1))


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return gan_loss(pred, real, "lsgan")


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """Simple statistics of a set of images: per-colour mean, standard deviation and mean absolute
    horizontal and vertical differences (sharpness / noise level)."""
    x = x.float()
    dx = (x[..., 1:] - x[..., :-1]).abs().mean((0, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((0, 2, 3))
    return torch.cat([x.mean((0, 2, 3)), x.std((0, 2, 3), correction=0), dx, dy])


def moment_loss(fake: torch.Tensor, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L1 distance between the image statistics of generated and real sources, task by task."""
    tasks = labels.unique()
    return sum((image_statistics(fake[labels == j]) - image_statistics(real[labels == j])).abs().sum() for j in tasks) / len(tasks)


def gr_options(prefix: str, width: int, nz: int, lr: float) -> tuple[Option, ...]:
    """The options every generative-replay method declares, under its own prefix."""
    return (
        Option(f"{prefix}_fraction", -1.0, "share of each batch that is generated replay (negative: t/(t+1) on task t, as JL)", high=1),
        Option(f"{prefix}_jtr", True, "joint training with replay: the replayed pairs (x~, G_prev(x~)) are judged by the discriminator as real data"),
        Option(f"{prefix}_align", 1.0, "replay alignment: weight of MSE(G(x~), G_prev(x~)) on the replayed samples (0: off)", low=0),
        Option(f"{prefix}_width", width, "width of the source model's networks (its memory grows with the square)", low=1),
        Option(f"{prefix}_nz", nz, "size of the source model's noise / latent vector", low=1),
        Option(f"{prefix}_lr", lr, "Adam learning rate of the source model", low=0, open_low=True),
        Option(f"{prefix}_moments", 1.0, "weight of the term matching the sources' colour mean/std and sharpness per task", low=0),
    )


class GenerativeReplay(Method):
    batch_ahead = False  # its batches come from source models that train during the task's steps
    """Shared machinery of MeRGAN and Lifelong VAEGAN (not a method by itself: it has no ``name``).

    A subclass says how its source model is built (``make_source``), trained on one batch of sources with
    their task labels (``train_source``) and sampled (``sample_sources``)."""

    prefix: ClassVar[str] = ""

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.source_prev: nn.Module | None = None  # frozen working copy of the source model during a task
        self.source_opt: torch.optim.Optimizer | None = None  # the source model's optimiser during a task
        self.teacher: FrozenTeacher | None = None  # G after the previous task
        self.make_source()

    def o(self, key: str):
        return getattr(self.settings, f"{self.prefix}_{key}")

    # ---- what a subclass provides ------------------------------------------------------------
    def make_source(self) -> None:
        raise NotImplementedError

    def source_modules(self) -> dict[str, nn.Module]:
        """The modules of the source model kept between tasks, by memory kind."""
        raise NotImplementedError

    def train_source(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        raise NotImplementedError

    def sample_sources(self, model: nn.Module, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step_source(self) -> None:
        """The source model's update, its gradients averaged over the processes first (each trains on its
        share of the batch, so the copies stay the same on every process)."""
        self.ctx.ranks.average([p for group in self.source_opt.param_groups for p in group["params"]])
        self.source_opt.step()

    def sampler(self) -> nn.Module:
        """The module of the source model that makes images (copied frozen as S_prev)."""
        raise NotImplementedError

    # ---- hooks -------------------------------------------------------------------------------
    def before_task(self, t, task):
        params = [p for m in self.source_modules().values() for p in m.parameters()]
        self.source_opt = torch.optim.Adam(params, lr=self.o("lr"), betas=(0.5, 0.999))
        self.source_prev = None
        if t > 0:
            self.source_prev = copy.deepcopy(self.sampler()).eval()
            for p in self.source_prev.parameters():
                p.requires_grad_(False)

    def batch(self, t, task):
        gen, n = self.ctx.gen, self.ctx.cfg.batch_size
        share = past_share(self.o("fraction"), t) if t > 0 else 0.0
        n_old = replay_count(share, n, gen)
        current = Batch.of(*self.ctx.sample(task, n - n_old), t)
        if not n_old:
            return current
        old = torch.randint(0, t, (n_old,), generator=gen)
        xo = self.sample_sources(self.source_prev, old)
        with self.ctx.autocast():
            yo = self.teacher(xo).float().clamp(0, 1)
        # JTR: the replayed pairs are training data for the adversarial game; their pixel term is RA's
        replay = Batch.of(xo, yo, old, Batch.GENERATED, judged=bool(self.o("jtr")))
        return Batch.mix((current, (n - n_old) / n), (replay, 0.0))

    def generator_loss(self, step):
        """Replay alignment (RA): ``align * share * MSE(G(x~), G_prev(x~))`` on the replayed sources, the share
        they have of the batch: at ``--mergan-align 1`` the pixel terms of current and replayed samples weigh
        as in joint training."""
        rows = step.batch.where(Batch.GENERATED)
        if self.o("align") <= 0 or not bool(rows.any()):
            return None
        share = float(rows.float().mean())
        rows = rows.to(step.fake.device)
        return self.o("align") * share * F.mse_loss(step.fake[rows].float(), step.y[rows].float())

    def after_step(self, step):
        self.train_source(step.x.detach(), step.batch.task.to(step.x.device))

    def after_task(self, t, task):
        self.teacher = FrozenTeacher(self.ctx.G)
        self.source_prev = None
        self.source_opt = None

    def state_dict(self):
        return {
            "source": {k: m.state_dict() for k, m in self.source_modules().items()},
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "source_opt": None if self.source_opt is None else self.source_opt.state_dict(),
            "source_prev": None if self.source_prev is None else self.source_prev.state_dict(),
        }

    def load_state_dict(self, state, seen):
        for k, m in self.source_modules().items():
            m.load_state_dict(state["source"][k])
        self.teacher = FrozenTeacher.restore(self.ctx.G, state["teacher"])
        if state["source_opt"] is not None:  # in the middle of a task: what before_task set up
            self.before_task(len(seen) - 1, seen[-1])
            self.source_opt.load_state_dict(state["source_opt"])
            if state["source_prev"] is not None:
                self.source_prev.load_state_dict(state["source_prev"])

    def memory(self):
        out = {k: module_bytes(m) for k, m in self.source_modules().items()}
        if self.teacher is not None:
            out["previous_generator"] = self.teacher.memory_bytes()
        return out


class MeRGAN(GenerativeReplay):
    name = "mergan"
    title = "Wu et al. (MeRGAN)"
    cite = "Wu et al. [45]: generative replay with replay alignment"
    prefix = "mergan"
    options = gr_options("mergan", width=16, nz=32, lr=1e-3)

    def make_source(self):
        ctx, dev = self.ctx, self.ctx.device
        self.S = SourceGenerator(ctx.n_tasks, ctx.cfg.size, self.o("width"), self.o("nz")).to(dev)
        self.S_critic = SourceCritic(ctx.n_tasks, self.o("width")).to(dev)

    def source_modules(self):
        return {"source_generator": self.S, "source_critic": self.S_critic}

    def sampler(self):
        return self.S

    def sample_sources(self, model, labels):
        return model.sample(labels, self.ctx.dgen)

    def train_source(self, x, labels):
        z = self.S.noise(x.shape[0], self.ctx.dgen, x.device)
        with self.ctx.autocast():
            fake = self.S(*z, labels)
            loss_d = 0.5 * (lsgan(self.S_critic(x, labels), True) + lsgan(self.S_critic(fake.detach(), labels), False))
        self.source_opt.zero_grad(set_to_none=True)
        loss_d.backward()
        with no_weight_grads(self.S_critic), self.ctx.autocast():
            loss_g = lsgan(self.S_critic(fake, labels), True)
        if self.o("moments") > 0:
            loss_g = loss_g + self.o("moments") * moment_loss(fake, x, labels)
        for p in self.S.parameters():  # the critic's loss left no gradient on S (fake was detached)
            p.grad = None
        loss_g.backward()
        self.step_source()
