"""Assoc-GAN (the paper's method, §3.2-3.3): a heuristics module that recalls past tasks from the current
task's targets, and a continual distillation that slows the drift of the weights that mattered (off by default
here: it costs every benchmark, see below).

**Mapping memory.** With task j's data, a small mapper M_j learns the inverse mapping y -> x of that task (``nets/mapper.py``: a scaled-down ResNet generator that predicts a
per-pixel mean and log-std, and the chance of an impulse: a pixel turned black or white in all channels).
Its randomness is then calibrated on the task's stored pairs alone (no call to any degradation, the same for
built-in, recipe and a user's own paired data): the sampled variance is matched to the white-noise variance
the stored sources have beyond the mapper's mean (Immerkær's estimator on both), and the impulse probability
to the share of impulse pixels in the stored sources. A random degradation (noise) leaves its noise in the
sources and not in the mean; a deterministic one (blur, tone curves, colour shifts) leaves none, so its mapper
adds no noise and no impulses the task never had. The mapper's steps (``--mapper-steps``, by default half the
task's) are spread over the task's batches where a core is to spare (a GPU run, or a CPU run with fewer threads
than cores): the batch hook takes its share each time, so the mapper trains in the loop's batch thread while
the generator trains, instead of after the task, and the wall time a user waits for grows little (docs/results.md,
"restore4 (3 seeds, ...)", the Time bullet). Where the generator's step uses every core the mapper trains after
the task, as a batch thread beside it would oversubscribe them. The mapper's crops come from a random stream of
its own, so either schedule trains the same generator from the same seed, on any machine. *Departure from the
paper:* the paper's mapper is a CycleGAN generator; a Gaussian alone stands for impulse noise with colour
speckle, which the generator then learns to remove instead of the impulses (restore4, seed 0: the impulse task
ended at 21.3 dB with a Gaussian-only mapper against 25.4 with the impulse component; docs/results.md,
"restore4 (3 seeds, ...)", "The impulse component of the mappers"). Only M_j is kept (in half precision), never
the data.

**Controller and association samples.** While task i > 1 trains, a share r of each batch's content loss goes
to association samples (M_j(z), z), with j drawn per sample among the past tasks, made without gradient through
the mapper (for eight steps at a time: one mapper call per past task). The batch carries each sample's weight
and the loop's content loss is (1 - r) L(G(x), y) + r L(G(M_j(z)), z) (eq. 3), whatever the batch size: any
r > 0 gets at least one association sample. With ``--assoc-ratio balanced`` (the default) r = (i - 1) / i, so
every task seen has the same share, as in joint learning; a number fixes r.

*Which z.* The paper's eq. 3 takes z = y, the current target (``--assoc-target current``). That is right when
every task has the same target domain (restoration: clean photos), and wrong on a chain of styles (photo ->
sketch -> blueprint): a sketch-making mapper applied to a blueprint target teaches G to turn photos into
blueprints.
With ``--assoc-target domain`` (the default) each past task j gets the current image that lies in *its* target
domain: after each task a ``DomainSignature`` keeps the mean and spread of 14 simple features of its targets
(per-channel mean, spread and 2nd/98th percentiles, noise level, sharpness: 112 bytes), and at the start of
each task, for j from the latest down, the nearest of the current target, the current input and the images
the later mappers make from their own picks is chosen. On restoration tasks that is the current target (eq. 3
itself); on a chain the previous task's targets are the current inputs, and the task before's are made from
them by M_{i-1}, so every association sample is a pair of its own task.

*New colours through a chain (``--assoc-recolour chain``, the default; a departure from the paper, which has no
chains).* A task whose targets keep less than a third of its sources' colour (photo -> pencil sketch: 25%; a
restoration task: about 100%; measured on 4x4 averages of its stored pairs after the task, 4 bytes) cannot give
its mapper the colours back. Reached directly (its targets are the current inputs) the mapper still sees the
faint colours a sketch keeps; reached through a later task's mapper (a sketch made from a blueprint) it sees none,
and its photos come out in one guessed tint: the generator then learns the sketch task for that tint and answers
real photos with the newest style (tones3, seed 0: 0.80 SSIM on such samples against 0.49 on real photos). So
each such association input gets drawn colours: its colours turned about the grey axis by a uniform angle and
their saturation scaled by a factor in [1, 2], its grey level kept, teaching that a photo's colours do not say
its task. Measured on tones3 over three seeds: the sketch task ends at 0.6 SSIM instead of 0.52 (docs/results.md,
"tones3: the sketch task through a chain"); it stays below doing nothing (0.675). Restoration tasks keep their
colours, so restore4 runs are unchanged. ``off`` keeps the mappers' colours.

**Continual distillation (``--distill on``; off by default).** After each task, theta* = G's weights and F =
the curvature of the content loss on ``--fisher-samples`` training pairs of that task (drawn, with the
curvature's probes, from a random stream of their own, so that the setting changes no other draw of the run):
the diagonal of its Gauss-Newton matrix (``fisher.gauss_newton_diagonal``, the one curvature every quadratic
penalty of this package uses, shared with CLGAN and Thanh-Tung & Tran; Liang et al.'s path integral is in the
same unit). While the next task trains, lambda' * sum_k 0.5 F_k (theta_k - theta*_k)^2 is added (eq. 6-7): at lambda'
= 1 it is the second-order estimate of how much the old tasks' content loss rises, in the units of the current
one (the Laplace approximation, with each task weighing as much as the new). Fishers of several tasks add up
(online EWC) and theta* moves to the newest weights. Between tasks F is kept as 4-bit codes of its logarithm
and theta* in float16 (the penalty at the weights it came from is then zero to within float16 rounding), but
only for the weights that matter: the smallest importances that together hold 1e-4 of F's total are set to
zero (``--distill-keep 0.9999``) and those weights keep no theta*, since nearly all of the Fisher lies in a
small share of the weights (docs/results.md, "The quadratic penalties in the units of the loss", "What the
anchor keeps"). ``--distill-keep 1`` keeps every weight; ``--distill-storage 8bit`` (F in 8-bit codes) or
``half`` (F in bfloat16) store F more finely.

*Departure from the paper, measured: the distillation is off by default.* The paper's Table 3 has it adding
2.8 dB to the heuristics; here no weight helps, because the association samples already hold the old tasks and
the penalty slows the new one more than it keeps the old (restore4, 3 seeds: 27.13 dB at lambda' 0 against
26.45 at the Laplace weight 1; docs/results.md, "The quadratic penalties in the units of the loss"). Off, it
also costs no Fisher after each task, no penalty each step and no anchor in memory. ``--distill on`` gives the
paper's full method, at ``--lambda-distill 0.1`` unless told otherwise (the weight of that sweep that costs
least while it still acts); a distillation option given without it is refused, since it would change nothing.

**Memory.** The mappers (float16) and the domain signatures, and with ``--distill on`` theta* and F: counted in
``memory_bytes``.

**Ablation.** ``--heuristics off --distill on`` keeps the distillation alone; ``--distill on`` is the full method
(the paper's Table 3; ``assocgan study ablation`` runs every row). Each row carries the terms its label names at
any preset: "Backbone" is the generator trained by the adversarial loss alone (the paper's text: the rows
below add the content loss, then the adversarial term), read as what an adversarial loss without a content
loss learns of the tasks; "+Lmse" has the content loss and no adversarial term; every "+Ladv" row has the
adversarial term at the run's weight, or 1e-3 where the preset has none (the quick preset). ``--preset
paper-quick`` runs the paper's protocol at the quick preset's size: the adversarial term at 1e-3, eq. 3's
targets (``--assoc-target current``) and the distillation on.

**Related work.** Gu, Wang & Li, "Incremental Image De-raining via Associative Memory" (AAAI 2023), is the closest
relative of the mapping memory: it also replays past steps without their data, by sampling the domain mappings
of earlier de-raining steps. It stays within one restoration family (rain of several kinds), where the target
domain is always the clean photo; here the mappers serve unrelated tasks and styles, which is why each past task
gets the image in its own target domain (``--assoc-target domain``) and a mapper with an impulse component.
"""

from __future__ import annotations

import os

import torch

from ..errors import UserError
from ..fisher import QuadraticAnchor, content_curvature
from ..memory import module_bytes
from ..nets.mapper import (  # noqa: F401 (re-exported)
    DomainSignature,
    Mapper,
    MapperTraining,
    calibrate,
    colour_kept,
    domain_features,
    domain_images,
    plan_domains,
    random_crop,
    recolour,
    recoloured,
)
from .base import Batch, Method, Option


def _ratio(value):
    if isinstance(value, str) and value != "balanced":
        value = float(value)
    if isinstance(value, float) and not 0 <= value < 1:
        raise ValueError(value)
    return value


class AssocGAN(Method):
    name = "assoc"
    title = "Assoc-GAN"
    cite = "the paper this project implements: heuristics module + continual distillation"
    options = (
        Option("assoc_ratio", "balanced", "share r of each batch made of association samples: 'balanced' ((i-1)/i at task i) or a number in [0, 1)"),
        Option("heuristics", True, "association samples from the mapping memory (off: ablation)"),
        Option(
            "assoc_target",
            "domain",
            "what M_j is applied to and trains towards: 'current' target (the paper's eq. 3) or, per past task, "
            "the current image in its target 'domain' (holds on chained styles; see docs)",
            ("domain", "current"),
        ),
        Option(
            "assoc_recolour",
            "chain",
            "new colours for the association inputs of a past task reached through a later task's mapper: 'chain' "
            "(a chain loses colour at each link; see docs) or 'off' (the mappers' colours)",
            ("chain", "off"),
        ),
        Option(
            "distill",
            False,
            "the continual distillation penalty of eq. 6-7 (on: the paper's full method; off, the default: it costs every benchmark here, see docs)",
        ),
        Option(
            "lambda_distill",
            0.1,
            "lambda', weight of the distillation penalty with --distill on (1: the Laplace estimate of the old "
            "tasks' content-loss rise, which stops new tasks from being learned; see docs)",
            low=0,
        ),
        Option("fisher_samples", 64, "training pairs used for the Fisher after each task", low=1),
        Option(
            "distill_storage",
            "compact",
            "how F is kept between tasks: compact (4-bit log codes), 8bit (8-bit log codes) or half (bfloat16); theta* is kept in float16",
            ("compact", "8bit", "half"),
        ),
        Option(
            "distill_keep",
            0.9999,
            "share of the Fisher's total whose weights keep a theta*: the smallest importances holding the rest are dropped (1: every weight)",
            low=0,
            high=1,
            open_low=True,
        ),
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
            self.settings.assoc_ratio = _ratio(self.settings.assoc_ratio)
        except ValueError:
            raise UserError(f"--assoc-ratio {self.settings.assoc_ratio!r}: 'balanced' or a number in [0, 1)") from None
        self.mappers: list[Mapper] = []  # stored in float16
        self._work: list[Mapper] = []  # float32 working copies derived from the stored ones
        self.anchor = QuadraticAnchor(storage=self.settings.distill_storage, keep=self.settings.distill_keep)
        self._pool: Batch | None = None  # association samples made ahead
        self.trainer: MapperTraining | None = None  # the current task's mapper in training
        self.signatures: list[DomainSignature] = []  # each past task's target domain
        self.colour_kept: list[float] = []  # each past task's share of its sources' colour that its targets keep
        self.plan: dict[int, str | int] = {}

    DISTILL_OPTIONS = ("lambda_distill", "fisher_samples", "distill_storage", "distill_keep")

    @classmethod
    def needs(cls, option):
        return {"distill": True} if option in cls.DISTILL_OPTIONS else {}

    @classmethod
    def resolve_options(cls, given):
        """The base's, and a clear error for a distillation option set while the distillation is off (it would
        change nothing)."""
        opts = super().resolve_options(given)
        if not opts["distill"]:
            for o in cls.options:
                if o.name in cls.DISTILL_OPTIONS and opts[o.name] != o.default:
                    raise UserError(
                        f"{o.flag} {o.shown(opts[o.name])}: the continual distillation is off (the default), so this would change nothing; add --distill on"
                    )
        return opts

    # ---- the controller ----------------------------------------------------------------
    def ratio(self, t: int) -> float:
        if not self.settings.heuristics or not self.mappers:
            return 0.0
        if self.settings.assoc_ratio == "balanced":
            return len(self.mappers) / (len(self.mappers) + 1)
        return float(self.settings.assoc_ratio)

    def before_task(self, t, task):
        self._pool = None
        if self._work and self.settings.assoc_target == "domain":
            self.plan = self.plan_sources(task)
        if self.settings.heuristics:
            self.trainer = MapperTraining(
                self.new_mapper(), self.settings.mapper_steps or max(1, self.ctx.cfg.steps // 2), self.settings.mapper_lr, self.ctx.side_stream("mapper", t)
            )
            self.trainer.beside = self.core_to_spare()

    def core_to_spare(self) -> bool:
        """Whether the loop's batch thread can train the mapper beside the generator without slowing it: on a
        GPU, or on a CPU whose cores the generator's step does not all use. (A batch thread on a CPU whose every
        core runs the generator's step oversubscribes them and slows the run: docs/results.md, "`make demo`".)"""
        return self.ctx.device.type != "cpu" or torch.get_num_threads() < (os.cpu_count() or 1)

    def plan_sources(self, task, n: int = 32) -> dict[int, str | int]:
        """For each past task j (the latest first), which current image lies in its target domain
        (``nets.mapper.plan_domains``): on a chain (photo -> sketch -> blueprint) the previous task's targets are
        the current inputs and the one before's are made from them by M_{t-1}; on restoration tasks every target
        domain is the clean photos, the current targets."""
        x, y = task.sample(n, self.ctx.gen)
        plan = plan_domains(self.signatures, self._work, x, y, self.ctx.device)
        self.ctx.log("assoc/plan_" + "_".join(str(plan[j]) for j in sorted(plan)), float(len(plan)))
        return plan

    def domain_image(self, j: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The images in past task j's target domain made from the current pairs (x, y), as planned."""
        if self.settings.assoc_target == "current":
            return y
        return domain_images(self.plan, self._work, j, x, y, self.ctx.dgen)

    def batch(self, t, task):
        out = self.mixed_batch(t, task)
        if self.trainer is not None and self.trainer.beside:  # the task's mapper trains beside G: its share of steps for this batch
            for _ in range(self.trainer.due(self.ctx.cfg.steps) - self.trainer.done):
                self.mapper_step(task)
        return out

    def mixed_batch(self, t, task):
        n, r = self.ctx.cfg.batch_size, self.ratio(t)
        if r == 0:
            return Batch.of(*self.ctx.sample(task, n), t)
        n_assoc = min(n - 1, max(1, round(r * n)))  # any r > 0 gets at least one sample, weighted r in all (eq. 3)
        current = Batch.of(*self.ctx.sample(task, n - n_assoc), t)
        if self._pool is None or len(self._pool) < n_assoc:
            self._pool = self.make_associations(task, n_assoc * self.POOL_STEPS)
        assoc, self._pool = self._pool.split(n_assoc)
        return Batch.mix((current, 1 - r), (assoc, r))

    def make_associations(self, task, n: int) -> Batch:
        """``n`` association samples (M_j(z), z) with a past task j drawn at random for each, z the image of the
        current pair in task j's target domain (``--assoc-target``), made without gradient and in bf16
        (inference costs the mapper's output nothing measurable), on the training device."""
        x, y = self.ctx.sample(task, n)
        which = torch.randint(0, len(self._work), (n,), generator=self.ctx.gen)
        xa, ya = torch.empty_like(y), torch.empty_like(y)
        with self.ctx.autocast():
            for j in which.unique().tolist():
                sel = (which == j).to(y.device)
                xa[sel], ya[sel] = self.associate(j, x[sel], y[sel])
        return Batch.of(xa, ya, which, Batch.ASSOCIATION)

    def associate(self, j: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Association pairs (M_j(z), z) of past task j made from current pairs (x, y) as the current task's plan
        says: z in task j's target domain, M_j(z) drawn, with new colours where ``recolours(j)``."""
        z = self.domain_image(j, x, y)
        xa = self._work[j].sample(z, self.ctx.dgen).float()
        return (recolour(xa, self.ctx.dgen) if self.recolours(j) else xa), z

    def recolours(self, j: int) -> bool:
        """Whether past task j's association inputs get new colours (``--assoc-recolour chain``;
        ``nets.mapper.recoloured``)."""
        return self.settings.assoc_recolour == "chain" and recoloured(self.plan, j, self.colour_kept)

    def association_samples(self, y: torch.Tensor, j: int) -> torch.Tensor:
        """Association samples of past task j made from targets ``y`` (for pictures and tests)."""
        return self._work[j].sample(y.to(self.ctx.device), self.ctx.dgen).cpu()

    # ---- continual distillation ---------------------------------------------------------
    def generator_loss(self, step):
        if not self.settings.distill:
            return None
        p = self.anchor.penalty()
        return None if p is None else self.settings.lambda_distill * p

    # ---- after a task: remember ----------------------------------------------------------
    def after_task(self, t, task):
        G = self.ctx.G
        if self.settings.distill:
            gen = self.ctx.side_stream("fisher", t)  # so that the distillation changes no other draw of the run
            idx = torch.randperm(task.n_train, generator=gen)[: self.settings.fisher_samples]
            x, y = task.pairs(idx, gen)
            curvature, _ = content_curvature(G, x.to(self.ctx.device), y.to(self.ctx.device), gen)
            self.anchor.update(G, curvature)
        if self.settings.heuristics:
            self.signatures.append(DomainSignature(task.train_y[:256].float().div(255)))
            self.colour_kept.append(colour_kept(task.train_x[:256], task.train_y[:256]))
            self.remember(self.finish_mapper(task).half())

    def remember(self, mapper: Mapper) -> None:
        """Keep a trained mapper (float16) in the mapping memory, with its float32 working copy."""
        self.mappers.append(mapper.eval())
        work = self.new_mapper()
        work.load_state_dict({k: v.float() for k, v in mapper.state_dict().items()})
        self._work.append(work.eval())

    def state_dict(self):
        pool = None if self._pool is None else {f: getattr(self._pool, f).cpu() for f in Batch._FIELDS}
        return {
            "mappers": [m.state_dict() for m in self.mappers],
            "anchor": self.anchor.state_dict(),
            "pool": pool,
            "signatures": [(sig.mean, sig.std) for sig in self.signatures],
            "colour_kept": list(self.colour_kept),
            "plan": self.plan,
            "trainer": None if self.trainer is None else self.trainer.state_dict(),
        }

    def load_state_dict(self, state, seen):
        for sd in state["mappers"]:
            mapper = self.new_mapper().half()
            mapper.load_state_dict(sd)
            self.remember(mapper)
        self.anchor.load_state_dict(state["anchor"], self.ctx.G)
        self._pool = None if state["pool"] is None else Batch(**state["pool"]).to(self.ctx.device)
        self.signatures = [DomainSignature.of(mean, std) for mean, std in state["signatures"]]
        self.colour_kept = list(state.get("colour_kept", [1.0] * len(self.signatures)))  # a state saved before it: none recoloured
        self.plan = dict(state["plan"])
        if state.get("trainer") is not None:  # saved in the middle of a task
            self.trainer = MapperTraining(self.new_mapper(), state["trainer"]["steps"], self.settings.mapper_lr, torch.Generator())
            self.trainer.load_state_dict(state["trainer"])

    def new_mapper(self) -> Mapper:
        return Mapper(self.settings.mapper_ngf, self.settings.mapper_blocks).to(self.ctx.device)

    def mapper_step(self, task) -> None:
        """One training step of the current task's mapper (``MapperTraining.step``)."""
        self.trainer.step(task, self.settings.mapper_batch, self.settings.mapper_crop, self.ctx.device)

    def finish_mapper(self, task) -> Mapper:
        """The current task's mapper after its last steps (those the batches left, if any), calibrated."""
        while self.trainer.done < self.trainer.steps:
            self.mapper_step(task)
        self.ctx.log("assoc/mapper_loss", self.trainer.loss)
        mapper, self.trainer = self.trainer.mapper, None
        self.calibrate(mapper, task)
        return mapper

    def calibrate(self, mapper: Mapper, task) -> None:
        """Fit the mapper's randomness to the task's own, measured on the stored pairs alone (``nets.mapper.calibrate``;
        the pairs drawn from the run's stream, as they always were here)."""
        calibrate(mapper, task, self.ctx.gen, self.ctx.device)

    def pictures(self, seen):
        """The paper's Figure 13: for each past task, its real inputs, then three association samples made from
        the same targets (different draws where the task is random)."""
        if not self._work:
            return {}
        from ..imaging import Picture

        rows = []
        for j in range(len(self._work)):
            x, y = seen[j].test_pairs()
            x, y = x[:4], y[:4]
            rows.append([x] + [self.association_samples(y, j) for _ in range(3)])
        headers = ["real inputs"] + [f"association samples {k} (score vs real)" for k in (1, 2, 3)]
        return {f"association_after_task{len(seen)}": Picture(rows, headers, [f"T{j + 1} {seen[j].name}" for j in range(len(rows))], compare_to=0)}

    # ---- bookkeeping -------------------------------------------------------------------
    def memory(self):
        out = {}
        if self.mappers:
            out["mappers"] = sum(module_bytes(m) for m in self.mappers)
        if self.signatures:
            out["domain_signatures"] = sum(s.nbytes for s in self.signatures) + 4 * len(self.colour_kept)
        if self.anchor.active:
            out["distillation"] = self.anchor.memory_bytes()
        return out
