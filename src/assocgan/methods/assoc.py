"""Assoc-GAN (the paper's method, §3.2-3.3): a heuristics module that recalls past tasks from the current
task's targets, and a continual distillation that slows the drift of the weights that mattered.

**Mapping memory.** After task j is trained, while its data is still there, a small mapper M_j learns the
inverse mapping y -> x of that task (``nets/mapper.py``: a scaled-down ResNet generator that predicts a
per-pixel mean and log-std). Its noise scale is then calibrated on the task's stored pairs alone (no call to
any degradation, the same for built-in, recipe and a user's own paired data): the sampled variance is matched
to the white-noise variance the stored sources have beyond the mapper's mean (Immerkær's estimator on both). A
random degradation (noise) leaves its noise in the sources and not in the mean; a deterministic one (blur,
tone curves, colour shifts) leaves none, so its mapper adds no noise the task never had. Only M_j is kept (in half
precision), never the data.

**Controller and association samples.** While task i > 1 trains, a share r of each batch becomes association
samples (M_j(y), y), made from targets y of the current task with j drawn per sample among the past tasks,
without gradient through the mapper (made for eight steps at a time: one mapper call per past task; only the
current pairs of a batch are degraded). The loss is (1 - r) L(G(x), y) + r L(G(M_j(y)), y) (eq. 3). With
``--assoc-ratio balanced`` (the default) r = (i - 1) / i, so every task seen has the same share of the batch,
as in joint learning; a number fixes r.

**Continual distillation.** After each task, theta* = G's weights and F = the diagonal empirical Fisher of the
content loss (mean of squared per-sample gradients, torch.func) at theta*, from ``--fisher-samples`` training
pairs of that task. While the next task trains, lambda' * sum_k 0.5 F_k (theta_k - theta*_k)^2 is added
(eq. 6-7). Fishers of several tasks add up (online EWC) and theta* moves to the newest weights. Our F is the
Fisher of one sample's mean-squared error, so lambda' counts in samples: lambda' = n is the Laplace
approximation of n samples' likelihood. Calibrated on restore4 at the quick preset (``assocgan study lambda``,
docs/results.md): from 0 to 3000 the final average stays on a plateau within seed noise; from 30000 on the
penalty stops the weights from learning the later tasks. The default, 300, lies in the plateau.
Between tasks theta* is kept in int8 (one scale per tensor) and F as 8-bit codes of its logarithm: 2 bytes a
weight instead of 8 in float32 (``--distill-storage half``: float16 and bfloat16, 4 bytes).

**Memory.** The mappers (float16) plus theta* and F: counted in ``memory_bytes``.

**Ablation.** ``--heuristics off`` drops the association samples and the mappers; ``--distill off`` drops the
distillation (the paper's Table 3; ``assocgan study ablation``).
"""
from __future__ import annotations

import torch

from ..fisher import QuadraticAnchor, diagonal_fisher
from ..memory import module_bytes
from ..metrics import noise_sigma
from ..nets.mapper import Mapper, mapper_loss
from .base import Method, Option


def _ratio(value):
    if isinstance(value, str) and value != "balanced":
        value = float(value)
    if isinstance(value, float) and not 0 <= value < 1:
        raise ValueError(value)
    return value


def random_crop(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` x ``size`` window of each pair (whole images when ``size`` is 0 or too large)."""
    h, w = x.shape[-2:]
    if size <= 0 or size >= min(h, w):
        return x, y
    size -= size % 2
    top = int(torch.randint(0, h - size + 1, (), generator=gen))
    left = int(torch.randint(0, w - size + 1, (), generator=gen))
    return x[..., top : top + size, left : left + size], y[..., top : top + size, left : left + size]


class AssocGAN(Method):
    name = "assoc"
    title = "Assoc-GAN"
    cite = "Assoc-GAN: heuristics module + continual distillation"
    options = (
        Option("assoc_ratio", "balanced", "share r of each batch made of association samples: 'balanced' ((i-1)/i at task i) or a number in [0, 1)"),
        Option("heuristics", True, "association samples from the mapping memory (off: ablation)"),
        Option("distill", True, "continual distillation penalty (off: ablation)"),
        Option("lambda_distill", 300.0, "lambda', weight of the distillation penalty (in samples; see docs)", low=0),
        Option("fisher_samples", 64, "training pairs used for the Fisher after each task", low=1),
        Option("distill_storage", "8bit", "how theta* and F are kept between tasks: 8bit (2 bytes a weight) or half (4)", ("8bit", "half")),
        Option("mapper_ngf", 16, "width of the mapper", low=1),
        Option("mapper_blocks", 2, "residual blocks of the mapper", low=0),
        Option("mapper_steps", 0, "training steps of each mapper (0: half the steps of a task)", low=0),
        Option("mapper_batch", 16, "batch size of mapper training", low=1),
        Option("mapper_lr", 5e-3, "learning rate of mapper training (cosine decay)", low=0, open_low=True),
        Option("mapper_crop", 24, "mappers train on random crops of this size (a seventh of the pixels at 64 px); 0: whole images", low=0),
    )
    POOL_STEPS = 8  # association samples are made for this many steps at once: one mapper call per past task

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        try:
            self.opt.assoc_ratio = _ratio(self.opt.assoc_ratio)
        except ValueError:
            from ..errors import UserError

            raise UserError(f"--assoc-ratio {self.opt.assoc_ratio!r}: 'balanced' or a number in [0, 1)") from None
        self.mappers: list[Mapper] = []  # stored in float16
        self._work: list[Mapper] = []  # float32 working copies derived from the stored ones
        self.anchor = QuadraticAnchor(storage=self.opt.distill_storage)
        self._pool: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0), torch.empty(0))  # samples made ahead

    # ---- the controller ----------------------------------------------------------------
    def ratio(self, t: int) -> float:
        if not self.opt.heuristics or not self.mappers:
            return 0.0
        if self.opt.assoc_ratio == "balanced":
            return len(self.mappers) / (len(self.mappers) + 1)
        return float(self.opt.assoc_ratio)

    def before_task(self, t, task):
        self._pool = (torch.empty(0), torch.empty(0))

    def batch(self, t, task):
        n = self.ctx.cfg.batch_size
        n_assoc = int(round(self.ratio(t) * n))
        if n_assoc == 0:
            return task.sample(n, self.ctx.gen)
        x, y = task.sample(n - n_assoc, self.ctx.gen)  # only the current pairs are degraded
        if self._pool[0].shape[0] < n_assoc:
            self._pool = self.make_associations(task, n_assoc * self.POOL_STEPS)
        xa, ya = (p[:n_assoc] for p in self._pool)
        self._pool = tuple(p[n_assoc:] for p in self._pool)
        return torch.cat([x, xa]), torch.cat([y, ya])

    def make_associations(self, task, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` association samples (M_j(y), y) from random current targets y, each with a past task j drawn at
        random, made without gradient and in bf16 (inference costs the mapper's output nothing measurable)."""
        y = task.sample_targets(n, self.ctx.gen)
        which = torch.randint(0, len(self._work), (n,), generator=self.ctx.gen)
        x = torch.empty_like(y)
        with self.ctx.autocast():
            for j in which.unique().tolist():
                sel = which == j
                x[sel] = self._work[j].sample(y[sel].to(self.ctx.device), self.ctx.gen).float().cpu()
        return x, y

    def association_samples(self, y: torch.Tensor, j: int) -> torch.Tensor:
        """Association samples of past task j made from targets ``y`` (for pictures and tests)."""
        return self._work[j].sample(y.to(self.ctx.device), self.ctx.gen).cpu()

    # ---- continual distillation ---------------------------------------------------------
    def generator_loss(self, step):
        if not self.opt.distill:
            return None
        p = self.anchor.penalty()
        return None if p is None else self.opt.lambda_distill * p

    # ---- after a task: remember ----------------------------------------------------------
    def after_task(self, t, task):
        G = self.ctx.G
        if self.opt.distill:
            idx = torch.randperm(task.n_train, generator=self.ctx.gen)[: self.opt.fisher_samples]
            x, y = task.pairs(idx, self.ctx.gen)
            fisher = diagonal_fisher(G, x.to(self.ctx.device), y.to(self.ctx.device))
            self.anchor.update(G, fisher)
        if self.opt.heuristics:
            self.remember(self.train_mapper(task).half())

    def remember(self, mapper: Mapper) -> None:
        """Keep a trained mapper (float16) in the mapping memory, with its float32 working copy."""
        self.mappers.append(mapper.eval())
        work = Mapper(self.opt.mapper_ngf, self.opt.mapper_blocks).to(self.ctx.device)
        work.load_state_dict({k: v.float() for k, v in mapper.state_dict().items()})
        self._work.append(work.eval())

    def state_dict(self):
        return {"mappers": [m.state_dict() for m in self.mappers], "anchor": self.anchor.state_dict(), "pool": list(self._pool)}

    def load_state_dict(self, state, seen):
        for sd in state["mappers"]:
            mapper = Mapper(self.opt.mapper_ngf, self.opt.mapper_blocks).to(self.ctx.device).half()
            mapper.load_state_dict(sd)
            self.remember(mapper)
        self.anchor.load_state_dict(state["anchor"], self.ctx.G)
        self._pool = tuple(state["pool"])

    def train_mapper(self, task) -> Mapper:
        gen, dev = self.ctx.gen, self.ctx.device
        mapper = Mapper(self.opt.mapper_ngf, self.opt.mapper_blocks).to(dev)
        opt = torch.optim.Adam(mapper.parameters(), lr=self.opt.mapper_lr, betas=(0.9, 0.99))
        steps = self.opt.mapper_steps or max(1, self.ctx.cfg.steps // 2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            x, y = random_crop(*task.sample(self.opt.mapper_batch, gen), self.opt.mapper_crop, gen)
            loss = mapper_loss(mapper, y.to(dev), x.to(dev))  # float32: bf16 training costs the mapper 2-3 dB
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.ctx.log("assoc/mapper_loss", float(loss.detach()))
        mapper.noise_scale.fill_(self.calibrate_noise(mapper, task))
        return mapper

    @torch.no_grad()
    def calibrate_noise(self, mapper: Mapper, task, n: int = 64) -> float:
        """Scale of the sampled noise so that its variance matches the task's own randomness, measured on the
        stored pairs alone: the white-noise variance (``metrics.noise_sigma``) that the stored sources have
        beyond the mapper's mean for the same targets. A random degradation (noise) leaves it in the sources
        and not in the mean; a deterministic one (blur, a tone curve, a colour shift) leaves none, so its mapper
        adds no noise the task never had."""
        idx = torch.randperm(task.n_train, generator=self.ctx.gen)[:n]
        x, y = task.stored_pairs(idx)
        mean, log_std = mapper(y.to(self.ctx.device))
        excess = noise_sigma(x).pow(2) - noise_sigma(mean.float().cpu().clamp(0, 1)).pow(2)
        var_task = max(float(excess.mean()), 0.0)
        var_model = float(log_std.float().mul(2).exp().mean())
        return (var_task / max(var_model, 1e-12)) ** 0.5

    def pictures(self, seen):
        """The paper's Figure 13: for each past task, its real inputs, then three association samples made from
        the same targets (different draws where the task is random)."""
        if not self._work:
            return {}
        rows = []
        for j in range(len(self._work)):
            x, y = seen[j].test_pairs()
            x, y = x[:4], y[:4]
            rows.append([x] + [self.association_samples(y, j) for _ in range(3)])
        return {f"association_after_task{len(seen)}": rows}

    # ---- bookkeeping -------------------------------------------------------------------
    def memory(self):
        out = {}
        if self.mappers:
            out["mappers"] = sum(module_bytes(m) for m in self.mappers)
        if self.anchor.active:
            out["distillation"] = self.anchor.memory_bytes()
        return out
