"""The one training loop shared by every method."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from .config import RunConfig
from .data.benchmarks import Benchmark
from .data.tasks import Task
from .devices import pick_device
from .distributed import SINGLE, Ranks
from .errors import UserError
from .evaluate import evaluate_task
from .feed import BatchFeed
from .losses import content_loss, gan_loss
from .methods import Batch, Context, Method, Step, get_method
from .nets import PatchGAN
from .nets.layers import no_weight_grads
from .rng import device_generator
from .router import TaskRouter

LOG_EVERY = 25  # steps between reads of the losses (a read waits for the device)


def check_amp(cfg: RunConfig, device: torch.device) -> None:
    """A UserError if ``--amp`` cannot work on ``device``."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise UserError(f"--amp fp16: float16 training (autocast with a gradient scaler) needs a CUDA device, not {device}; give --amp bf16 or --amp off")


def autocast_factory(cfg: RunConfig, device: torch.device) -> Callable[[], Any]:
    if cfg.amp == "off":
        return contextlib.nullcontext
    dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    return lambda: torch.autocast(device.type, dtype=dtype)


def device_time(device: torch.device) -> float:
    """Wall-clock seconds once the device has finished its queued work (called at task boundaries only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class LossWatch:
    """Non-finite losses, found without waiting for the device every step: the losses are kept (on the
    device) and checked together by ``check``; with ``immediate`` (the CPU, where a check costs nothing) each
    as it comes, so training stops at the very step, before that step's update."""

    def __init__(self, immediate: bool, diverged: Callable[[int, str], Exception]):
        self.immediate, self.diverged = immediate, diverged
        self.pending: list[tuple[int, str, torch.Tensor]] = []

    def add(self, step: int, who: str, loss: torch.Tensor) -> None:
        self.pending.append((step, who, loss.detach()))
        if self.immediate:
            self.check()

    def check(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        finite = torch.stack([v.float().reshape(()) for _, _, v in pending]).isfinite()
        if not bool(finite.all()):
            step, who, v = pending[int((~finite).nonzero()[0, 0])]
            raise self.diverged(step, f"the {who}'s loss is {float(v)}")


def scaled(loss: torch.Tensor, factor: float) -> torch.Tensor:
    """``loss * factor``; ``loss`` itself at 1 (one process: the same arithmetic as without the factor)."""
    return loss if factor == 1.0 else loss * factor


def set_threads(cfg: RunConfig) -> None:
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)


def lr_schedule(opt: torch.optim.Optimizer, cfg: RunConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning rate over one task's steps: constant, or a cosine decay from ``lr`` to a tenth of it."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=0.1 * cfg.lr)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


@dataclass
class TaskRecord:
    """What one method did on one task: scores on every task seen so far, and its costs."""

    t: int
    scores: list[dict[str, float]]  # one {metric: score} per task j <= t, each metric the run scores (Convention.metrics)
    train_seconds: float
    memory: dict[str, int]
    generator: nn.Module | None  # None for a record restored from a saved state
    method: Method | None
    losses: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # process CPU time of the same span: comparable between runs on a shared machine
    ahead: dict[str, float] | None = None  # task t+1 before it is trained (for FWT); None on the last task or with the task id
    initial: list[dict[str, float]] | None = None  # on the first record: the untrained generator on every task (FWT's b_j)
    batch_seconds: float = 0.0  # of train_seconds, the time the loop spent making batches or waiting for them
    routed: list[dict[str, float]] | None = None  # with --router on: every task j <= t scored with the router's answers
    router_accuracy: list[float] | None = None  # with --router on: the router's accuracy on each task's test images

    def to_state(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "scores": self.scores,
            "train_seconds": self.train_seconds,
            "memory": self.memory,
            "losses": self.losses,
            "cpu_seconds": self.cpu_seconds,
            "ahead": self.ahead,
            "initial": self.initial,
            "batch_seconds": self.batch_seconds,
            "routed": self.routed,
            "router_accuracy": self.router_accuracy,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> TaskRecord:
        return cls(
            d["t"],
            d["scores"],
            d["train_seconds"],
            d["memory"],
            None,
            None,
            d["losses"],
            d["cpu_seconds"],
            d.get("ahead"),
            d.get("initial"),
            d.get("batch_seconds", 0.0),
            d.get("routed"),
            d.get("router_accuracy"),
        )


@dataclass
class CurvePoint:
    global_step: int
    t: int
    scores: list[dict[str, float]]


class Diverged(Exception):
    """Training produced a non-finite loss or weight: the method cannot go on with these settings."""

    def __init__(self, method: str, t: int, task: str, step: int, what: str):
        self.method, self.t, self.task, self.step, self.what = method, t, task, step, what
        super().__init__(
            f"{method} diverged on task {t + 1} ({task}) at step {step}: {what}; lower --lr or the loss weights (the other methods' results are kept)"
        )


def history(state: dict[str, Any] | None) -> tuple[list[TaskRecord], list[CurvePoint]]:
    """The task records and curve points a saved training state holds (empty without a state)."""
    if state is None:
        return [], []
    return [TaskRecord.from_state(r) for r in state["records"]], [CurvePoint(**c) for c in state["curves"]]


def _rng_state(gen: torch.Generator, dgen: torch.Generator) -> dict[str, Any]:
    state = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
    if dgen is not gen:
        state["dgen"] = dgen.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, dgen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(state["gen"])
    if dgen is not gen and "dgen" in state:
        dgen.set_state(state["dgen"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def non_finite(*modules: nn.Module) -> str | None:
    """The name of the first weight or buffer of ``modules`` that holds a NaN or an infinity, or None."""
    for m in modules:
        for name, v in list(m.named_parameters()) + list(m.named_buffers()):
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return name
    return None


def build_networks(cfg: RunConfig, device: torch.device, method: type[Method] = Method) -> tuple[nn.Module, nn.Module]:
    G = method.build_generator(cfg).to(device)
    D = PatchGAN(6, cfg.ndf, norm=cfg.norm, image_size=cfg.size).to(device)
    if device.type == "cuda":  # NHWC: what tensor-core convolutions read without a transpose
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D


def check_memory(cfg: RunConfig, cls) -> None:
    """A UserError before anything is allocated if the generator's weights, gradients and Adam's two moments
    alone (16 bytes a weight) exceed this machine's memory: it is built on the meta device to count them."""
    with torch.device("meta"):
        n = sum(p.numel() for p in cls.build_generator(cfg).parameters())
    from .config import machine_memory

    total = machine_memory()
    if total is not None and 16 * n > total:
        raise UserError(
            f"--ngf {cfg.ngf}: the generator would have {n:,} weights, {16 * n / 2**30:.1f} GiB with their gradients and "
            f"optimiser state, more than this machine's {total / 2**30:.1f} GiB; give a smaller --ngf"
        )


def check_method(method_name: str, bench: Benchmark, cfg: RunConfig) -> None:
    """Build ``method_name`` as the loop will (on random streams of its own, which leave the run's untouched),
    so that a bad option or configuration is refused before anything is trained."""
    cls = get_method(method_name)
    cls.check_config(cfg)
    check_memory(cfg, cls)
    device = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        G, D = build_networks(cfg, device, cls)
        ctx = Context(cfg, G, D, torch.Generator(), len(bench.tasks), bench.task_names, contextlib.nullcontext, device=device)
        cls(ctx, **cfg.method_options.get(method_name, {})).check_tasks(bench.tasks)


@dataclass
class TaskRun:
    """One task as it trains: its optimisers and schedules, the sums of its losses and its clocks."""

    t: int
    task: Task
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None  # with the adversarial loss only
    schedules: list[torch.optim.lr_scheduler.LRScheduler]
    watch: LossWatch
    arch_terms: list[nn.Module]  # the generator's parts with a loss of their own (``auxiliary_loss``)
    first_step: int = 0  # where a resumed task goes on
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # each loss term summed over the steps, on the device
    # when training began, on the device clock and in process CPU time, moved later by each evaluation (not training
    # time) and, resumed, earlier by the time trained before the interruption
    start: float = 0.0
    cpu_start: float = 0.0
    batch_seconds: float = 0.0  # the time spent making batches or waiting for them

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.opt_g, self.opt_d) if o is not None]


class Trainer:
    """One method trained over the benchmark's tasks in order, evaluated after each task (``train_method``).

    ``on_state`` receives the full training state (networks, optimisers, schedules, random streams, the
    method's ``state_dict`` and the records so far) after each task and every ``cfg.checkpoint_every`` steps;
    ``resume`` is such a state, from which training goes on exactly as it would have without the interruption.
    A non-finite loss or weight raises ``Diverged``.

    With ``ranks`` of several processes (``distributed``) each trains on its share of every batch, gradients and
    losses averaged over them; only rank 0 evaluates (its records alone hold scores) and calls ``on_task``,
    ``on_curve`` and ``on_state``.
    """

    def __init__(
        self,
        method_name: str,
        bench: Benchmark,
        cfg: RunConfig,
        *,
        device: torch.device | None = None,
        on_task: Callable[[TaskRecord], None] | None = None,
        on_step: Callable[[int], None] | None = None,
        on_curve: Callable[[CurvePoint], None] | None = None,
        log: Callable[[str, float, int], None] | None = None,
        resume: dict[str, Any] | None = None,
        on_state: Callable[[dict[str, Any]], None] | None = None,
        ranks: Ranks = SINGLE,
    ):
        device = device or pick_device()
        check_amp(cfg, device)
        set_threads(cfg)
        cls = get_method(method_name)
        cls.check_config(cfg)
        ranks.check_batch(cfg.batch_size)
        self.method_name, self.bench, self.cfg, self.device, self.ranks, self.resume = method_name, bench, cfg, device, ranks, resume
        self.on_task, self.on_step, self.on_curve, self.log, self.on_state = on_task, on_step, on_curve, log, on_state
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest convolution algorithms, chosen once
        torch.manual_seed(cfg.seed)  # the same initial networks for every method of a run
        self.G, self.D = build_networks(cfg, device, cls)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.dgen = device_generator(self.gen, device, cfg.seed + 2)
        self.global_step = 0
        ctx = Context(
            cfg, self.G, self.D, self.gen, len(bench.tasks), bench.task_names, autocast_factory(cfg, device), self.log_scalar, device, self.dgen, ranks
        )
        self.method = cls(ctx, **cfg.method_options.get(method_name, {}))
        self.method.check_tasks(bench.tasks)
        self.router = TaskRouter(cfg, len(bench.tasks), device, ctx.log) if cfg.router else None  # the method answered without the task identity
        self.autocast = ctx.autocast
        self.convention = cfg.convention(bench.metric)
        self.use_gan = cfg.lambda_adv > 0
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")  # a no-op unless fp16
        self.adam = {"fused": True} if self.cuda else {}  # one kernel for all the weights
        self.acc = torch.float32 if device.type == "mps" else torch.float64  # loss sums, kept on the device
        self.records: list[TaskRecord] = []
        self.curves: list[CurvePoint] = []
        self.first_task, self.first_step = 0, 0
        if resume is None:
            # the untrained generator on every task: the b_j of forward transfer (evaluation draws no random numbers)
            self.initial = [evaluate_task(self.G, task, device, self.convention) for task in bench.tasks] if ranks.main else None
        else:
            self.initial = resume.get("initial")
            self.first_task, self.first_step, self.global_step = resume["task"], resume["step"], resume["global_step"]
            self.records, self.curves = history(resume)
            self.method.load_state_dict(resume["method_state"], bench.tasks[: self.first_task + (self.first_step > 0)])
            if self.router is not None:
                self.router.load_state_dict(resume["router"])
            self.G.load_state_dict(resume["G"])
            self.D.load_state_dict(resume["D"])
            _set_rng_state(self.gen, self.dgen, resume["rng"])  # last: building the method's memory may have drawn numbers

    def run(self) -> list[TaskRecord]:
        """Train every task from where training stands; the records of all the tasks."""
        for t in range(self.first_task, len(self.bench.tasks)):
            self.train_task(t)
        return self.records

    def log_scalar(self, name: str, value: float) -> None:
        if self.log is not None:
            self.log(name, float(value), self.global_step)  # the method's own stream: tags are the same for every method

    def diverged(self, t: int, s: int, what: str) -> Diverged:
        return Diverged(self.method_name, t, self.bench.tasks[t].name, s, what)

    def check_weights(self, t: int, s: int) -> None:
        """``Diverged`` if a weight of the networks is not finite."""
        bad = non_finite(self.G, self.D)
        if bad is not None:
            raise self.diverged(t, s, f"weight {bad} is not finite")

    def same_on_every_rank(self, what: str) -> None:
        """Several processes: the networks, the method's state and the streams must still be the same on each
        (exactly on the CPU; on a GPU nondeterministic kernels may leave the last bits apart)."""
        if self.ranks.several:
            self.ranks.check_same(
                what,
                {"G": self.G, "D": self.D, "method state": self.method.state_dict(), "gen": self.gen, "dgen": self.dgen},
                tolerance=0.0 if self.device.type == "cpu" else 1e-3,
            )

    def save_state(self, t: int, s: int, extra: dict[str, Any]) -> None:
        """Hand the training state at task ``t`` step ``s`` to ``on_state`` (``extra``: an interrupted task's own)."""
        if self.on_state is None and not self.ranks.several:  # several: every rank checks the weights, as rank 0 does
            return
        self.check_weights(t, s)
        if self.on_state is None:
            return
        self.on_state(
            {
                "method": self.method_name,
                "task": t,
                "step": s,
                "global_step": self.global_step,
                "G": self.G.state_dict(),
                "D": self.D.state_dict(),
                "method_state": self.method.state_dict(),
                "records": [r.to_state() for r in self.records],
                "curves": [vars(c) for c in self.curves],
                "rng": _rng_state(self.gen, self.dgen),
                "initial": self.initial,
                **({"router": self.router.state_dict()} if self.router is not None else {}),
                **extra,
            }
        )

    def task_state(self, run: TaskRun, feed: BatchFeed) -> dict[str, Any]:
        """What a saved state holds of an interrupted task: its optimisers, schedules, loss sums and clocks."""
        return {
            "optimizers": [o.state_dict() for o in run.optimizers],
            "schedules": [sc.state_dict() for sc in run.schedules],
            "sums": {k: float(v) for k, v in run.sums.items()},
            "seconds": time.perf_counter() - run.start,
            "cpu_seconds": time.process_time() - run.cpu_start,
            "batch_seconds": run.batch_seconds + feed.waited,
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
        }

    def segment_end(self, s: int) -> int:
        """The step after the last of the segment that starts at ``s``: the next saved state or the task's end."""
        every = self.cfg.checkpoint_every
        return min(self.cfg.steps, (s // every + 1) * every) if every and self.on_state is not None else self.cfg.steps

    def evaluate(self, t: int) -> list[dict[str, float]]:
        """The scores on every task up to ``t``."""
        return [evaluate_task(self.method.eval_generator(j), self.bench.tasks[j], self.device, self.convention) for j in range(t + 1)]

    def start_task(self, t: int) -> TaskRun:
        """Task ``t``'s optimisers and schedules, new or as a resumed state left them."""
        cfg, task = self.cfg, self.bench.tasks[t]
        start, cpu_start = device_time(self.device), time.process_time()
        mid_task = self.resume is not None and t == self.first_task and self.first_step > 0
        if not mid_task:
            self.method.before_task(t, task)
        opt_g = torch.optim.Adam(list(self.method.g_parameters()), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **self.adam)
        opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **self.adam) if self.use_gan else None
        run = TaskRun(t, task, opt_g, opt_d, [], LossWatch(self.device.type == "cpu", partial(self.diverged, t)), [], start=start, cpu_start=cpu_start)
        run.schedules = [lr_schedule(o, cfg) for o in run.optimizers]
        if mid_task:
            resume = self.resume
            for o, o_state in zip(run.optimizers, resume["optimizers"]):
                o.load_state_dict(o_state)
            for sched, sched_state in zip(run.schedules, resume["schedules"]):
                sched.load_state_dict(sched_state)
            if "scaler" in resume:
                self.scaler.load_state_dict(resume["scaler"])
            run.sums = {k: torch.tensor(v, dtype=self.acc, device=self.device) for k, v in resume["sums"].items()}
            run.start -= resume["seconds"]
            run.cpu_start -= resume["cpu_seconds"]
            run.batch_seconds = resume.get("batch_seconds", 0.0)
            run.first_step = self.first_step
        self.G.train()
        self.D.train()
        run.arch_terms = [m for m in self.G.modules() if callable(getattr(m, "auxiliary_loss", None))]
        return run

    def train_task(self, t: int) -> None:
        """Train task ``t`` a segment at a time, then end it (``end_task``)."""
        run = self.start_task(t)
        feed = BatchFeed(partial(self.make_batch, t, run.task), self.device, ahead=self.method.batch_ahead)
        try:
            s = run.first_step
            while s < self.cfg.steps:
                end = self.segment_end(s)
                self.train_segment(run, feed, s, end)
                s = end
            run.watch.check()
        finally:
            feed.close()
        run.batch_seconds += feed.waited
        self.end_task(run)

    def make_batch(self, t: int, task: Task) -> Batch:
        batch = self.ranks.share(self.method.batch(t, task)).to(self.device)
        if self.cuda:
            batch.x = batch.x.contiguous(memory_format=torch.channels_last)
            batch.y = batch.y.contiguous(memory_format=torch.channels_last)
        return batch

    def train_segment(self, run: TaskRun, feed: BatchFeed, first: int, end: int) -> None:
        """Steps ``first`` to ``end - 1``, their batches made by ``feed`` (ahead of the steps, with the method's
        ``batch_ahead``); after each, the losses logged, and the evaluation and saved state that fall on it."""
        cfg = self.cfg
        feed.start(end - first)
        for s in range(first, end):
            losses = self.train_step(run, s, feed.next())
            if (s + 1) % LOG_EVERY == 0:
                run.watch.check()
            if self.log is not None and (s % LOG_EVERY == 0 or s == cfg.steps - 1):
                for k, v in losses.items():
                    self.log_scalar(f"loss/{k}", float(v))
            if self.on_step is not None:
                self.on_step(1)
            if cfg.eval_every and self.global_step % cfg.eval_every == 0:
                self.curve_point(run)
            if cfg.checkpoint_every and (s + 1) % cfg.checkpoint_every == 0 and s + 1 < cfg.steps:
                run.watch.check()
                self.save_state(run.t, s + 1, self.task_state(run, feed))

    def train_step(self, run: TaskRun, s: int, batch: Batch) -> dict[str, torch.Tensor]:
        """One step: the discriminator's update (with the adversarial loss), then the generator's; its losses."""
        cfg, method = self.cfg, self.method
        x, y = batch.x, batch.y
        with self.autocast():
            fake = self.G(x)
        step = Step(run.t, s, batch, fake)
        losses: dict[str, torch.Tensor] = {}
        if self.use_gan:
            judged = slice(None) if bool(batch.judged.all()) else batch.judged.to(self.device)
            xj, yj, fake_j = x[judged], y[judged], fake[judged]
            losses.update(self.discriminator_step(run, step, xj, yj, fake_j))
        loss_c = content_loss(fake, y, batch.weight)
        loss_g = cfg.lambda_content * loss_c
        losses["content"] = loss_c.detach()
        for net in run.arch_terms:  # an architecture's own supervision of its parts (nets.gated: the colour stage)
            loss_a = net.auxiliary_loss(y, batch.weight)
            if loss_a is not None:
                loss_g = loss_g + cfg.lambda_content * loss_a
                losses["arch"] = loss_a.detach()
        if self.use_gan and len(xj):
            with no_weight_grads(self.D), self.autocast():
                pred = self.D(xj, fake_j)
            loss_adv = scaled(gan_loss(pred, True, cfg.gan_mode), batch.gan_scale)
            loss_g = loss_g + cfg.lambda_adv * loss_adv
            losses["adv"] = loss_adv.detach()
        elif self.use_gan:
            losses["adv"] = torch.zeros((), device=self.device)
        extra_g = method.generator_loss(step)
        if extra_g is not None:
            loss_g = loss_g + extra_g
            losses["g_extra"] = extra_g.detach()
        run.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        if self.ranks.several:  # the gradients and losses of the whole batch
            losses["g"] = loss_g.detach()
            losses = self.ranks.average([p for group in run.opt_g.param_groups for p in group["params"]], losses)
            loss_g = losses.pop("g")
        run.watch.add(s + 1, "generator", loss_g)
        self.scaler.step(run.opt_g)
        self.scaler.update()
        method.after_step(step)
        for sched in run.schedules:
            sched.step()
        self.global_step += 1
        for k, v in losses.items():
            run.sums[k] = run.sums[k] + v.to(self.acc) if k in run.sums else v.to(self.acc)
        return losses

    def discriminator_step(self, run: TaskRun, step: Step, xj: torch.Tensor, yj: torch.Tensor, fake_j: torch.Tensor) -> dict[str, torch.Tensor]:
        """The discriminator's update on the judged samples ``xj``, ``yj`` and their outputs ``fake_j``; its losses."""
        cfg, opt_d = self.cfg, run.opt_d
        losses: dict[str, torch.Tensor] = {}
        opt_d.zero_grad(set_to_none=True)
        if len(xj):  # (a process's share of a batch may hold no judged sample)
            with self.autocast():
                d_real, d_fake = self.D(xj, yj), self.D(xj, fake_j.detach())
            loss_d = scaled(0.5 * (gan_loss(d_real, True, cfg.gan_mode) + gan_loss(d_fake, False, cfg.gan_mode)), step.batch.gan_scale)
            self.scaler.scale(loss_d).backward()
        else:
            loss_d = torch.zeros((), device=self.device)
        loss_d = self.ranks.average(self.D.parameters(), {"d": loss_d})["d"]  # several processes: the whole batch's
        self.scaler.unscale_(opt_d)  # the hooks and the penalty see the true gradient
        d_step = Step(step.t, step.step, step.batch, step.fake.detach())
        self.method.discriminator_gradients(d_step)
        extra_d = self.method.discriminator_loss(d_step)
        if extra_d is not None:
            extra_d.backward()
            losses["d_extra"] = extra_d.detach()
        run.watch.add(step.step + 1, "discriminator", loss_d if extra_d is None else loss_d + extra_d)
        self.scaler.step(opt_d)
        losses["d"] = loss_d.detach()
        return losses

    def curve_point(self, run: TaskRun) -> None:
        """An ``--eval-every`` point: rank 0 scores every task seen so far (not counted as training time), the
        others wait for it."""
        if not self.ranks.main:
            self.ranks.barrier()  # while rank 0 evaluates
            return
        eval_start, eval_cpu = device_time(self.device), time.process_time()
        self.curves.append(CurvePoint(self.global_step, run.t, self.evaluate(run.t)))
        if self.on_curve is not None:
            self.on_curve(self.curves[-1])
        run.start += device_time(self.device) - eval_start  # evaluation is not training time
        run.cpu_start += time.process_time() - eval_cpu
        self.ranks.barrier()

    def end_task(self, run: TaskRun) -> None:
        """After a task's last step: the method's ``after_task``, the checks, and (rank 0) the evaluation, the
        record and ``on_task``; then the state the next task starts from."""
        cfg, method, t = self.cfg, self.method, run.t
        method.after_task(t, run.task)
        if self.router is not None:
            self.router.after_task(t, run.task)
        memory = {**method.memory(), **(self.router.memory() if self.router is not None else {})}
        seconds, cpu_seconds = device_time(self.device) - run.start, time.process_time() - run.cpu_start
        self.check_weights(t, cfg.steps)
        self.same_on_every_rank(f"{self.method_name} after task {t + 1}")
        last = t + 1 == len(self.bench.tasks)
        if not self.ranks.main:  # rank 0 evaluates, writes, and draws what its pictures draw: then every rank goes on with its streams
            self.records.append(TaskRecord(t, [], seconds, memory, self.G, method, {}, cpu_seconds))
            self.ranks.sync_streams(self.gen, self.dgen)
            if not last:
                self.save_state(t + 1, 0, {})
            return
        scores = self.evaluate(t)
        routed, accuracy = self.router.evaluate(t, method.eval_generator, self.bench.tasks, self.convention) if self.router is not None else (None, None)
        for j, sc in enumerate(scores):
            for m, v in sc.items():
                self.log_scalar(f"{m}/{self.bench.tasks[j].name}", v)
        # forward transfer: the next task as this generator answers it before training on it (not defined for a
        # method told the task identity, whose answer for a task does not exist before it is trained)
        ahead = None
        if not last and not method.needs_task_id:
            ahead = evaluate_task(method.eval_generator(t + 1), self.bench.tasks[t + 1], self.device, self.convention)
        rec = TaskRecord(
            t,
            scores,
            seconds,
            memory,
            self.G,
            method,
            {k: float(v) / cfg.steps for k, v in run.sums.items()},
            cpu_seconds,
            ahead,
            self.initial if t == 0 else None,
            run.batch_seconds,
            routed,
            accuracy,
        )
        self.records.append(rec)
        if self.on_task is not None:
            self.on_task(rec)
        self.ranks.sync_streams(self.gen, self.dgen)
        if not last:
            self.save_state(t + 1, 0, {})  # after on_task: what it drew from the random streams (pictures) is included


def train_method(method_name: str, bench: Benchmark, cfg: RunConfig, **options: Any) -> list[TaskRecord]:
    """Train one method over the benchmark's tasks in order; evaluate after each task (``Trainer``'s options:
    device, the callbacks, a saved state to resume, the ranks)."""
    return Trainer(method_name, bench, cfg, **options).run()
