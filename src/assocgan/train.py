"""The one training loop shared by every method."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

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

LOG_EVERY = 25  # steps between reads of the losses (a read waits for the device)


def check_amp(cfg: RunConfig, device: torch.device) -> None:
    """A UserError if ``--amp`` cannot work on ``device``."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise UserError(f"--amp fp16: float16 training (autocast with a gradient scaler) needs a CUDA device, not {device}; "
                        "give --amp bf16 or --amp off")


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
    scores: list[dict[str, float]]  # one {"psnr", "ssim"} per task j <= t
    train_seconds: float
    memory: dict[str, int]
    generator: nn.Module | None  # None for a record restored from a saved state
    method: Method | None
    losses: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # process CPU time of the same span: comparable between runs on a shared machine
    ahead: dict[str, float] | None = None  # task t+1 before it is trained (for FWT); None on the last task or with the task id
    initial: list[dict[str, float]] | None = None  # on the first record: the untrained generator on every task (FWT's b_j)
    batch_seconds: float = 0.0  # of train_seconds, the time the loop spent making batches or waiting for them

    def to_state(self) -> dict[str, Any]:
        return {"t": self.t, "scores": self.scores, "train_seconds": self.train_seconds, "memory": self.memory,
                "losses": self.losses, "cpu_seconds": self.cpu_seconds, "ahead": self.ahead, "initial": self.initial,
                "batch_seconds": self.batch_seconds}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "TaskRecord":
        return cls(d["t"], d["scores"], d["train_seconds"], d["memory"], None, None, d["losses"], d["cpu_seconds"], d.get("ahead"), d.get("initial"),
                   d.get("batch_seconds", 0.0))


@dataclass
class CurvePoint:
    global_step: int
    t: int
    scores: list[dict[str, float]]


class Diverged(Exception):
    """Training produced a non-finite loss or weight: the method cannot go on with these settings."""

    def __init__(self, method: str, t: int, task: str, step: int, what: str):
        self.method, self.t, self.task, self.step, self.what = method, t, task, step, what
        super().__init__(f"{method} diverged on task {t + 1} ({task}) at step {step}: {what}; "
                         "lower --lr or the loss weights (the other methods' results are kept)")


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
        raise UserError(f"--ngf {cfg.ngf}: the generator would have {n:,} weights, {16 * n / 2**30:.1f} GiB with their gradients and "
                        f"optimiser state, more than this machine's {total / 2**30:.1f} GiB; give a smaller --ngf")


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


def train_method(
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
) -> list[TaskRecord]:
    """Train one method over the benchmark's tasks in order; evaluate after each task.

    ``on_state`` receives the full training state (networks, optimisers, schedules, random streams, the
    method's ``state_dict`` and the records so far) after each task and every ``cfg.checkpoint_every`` steps;
    ``resume`` is such a state, from which training goes on exactly as it would have without the interruption.
    A non-finite loss or weight raises ``Diverged``.

    With ``ranks`` of several processes (``distributed``) each trains on its share of every batch, gradients and
    losses averaged over them; only rank 0 evaluates (its records alone hold scores) and calls ``on_task``,
    ``on_curve`` and ``on_state``.
    """
    device = device or pick_device()
    check_amp(cfg, device)
    set_threads(cfg)
    cls = get_method(method_name)
    cls.check_config(cfg)
    ranks.check_batch(cfg.batch_size)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest convolution algorithms, chosen once
    torch.manual_seed(cfg.seed)  # the same initial networks for every method of a run
    G, D = build_networks(cfg, device, cls)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    dgen = device_generator(gen, device, cfg.seed + 2)
    global_step = 0

    def log_scalar(name: str, value: float) -> None:
        if log is not None:
            log(name, float(value), global_step)  # the method's own stream: tags are the same for every method

    ctx = Context(cfg, G, D, gen, len(bench.tasks), bench.task_names, autocast_factory(cfg, device), log_scalar, device, dgen, ranks)
    method = cls(ctx, **cfg.method_options.get(method_name, {}))
    method.check_tasks(bench.tasks)
    autocast = ctx.autocast
    convention = cfg.convention()
    use_gan = cfg.lambda_adv > 0
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")  # a no-op unless fp16
    adam = {"fused": True} if cuda else {}  # one kernel for all the weights
    acc = torch.float32 if device.type == "mps" else torch.float64  # loss sums, kept on the device
    records: list[TaskRecord] = []
    curves: list[CurvePoint] = []
    first_task, first_step = 0, 0
    # the untrained generator on every task: the b_j of forward transfer (evaluation draws no random numbers)
    initial = [evaluate_task(G, task, device, convention) for task in bench.tasks] if resume is None and ranks.main else None
    if resume is not None:
        initial = resume.get("initial")
    if resume is not None:
        first_task, first_step, global_step = resume["task"], resume["step"], resume["global_step"]
        records, curves = history(resume)
        method.load_state_dict(resume["method_state"], bench.tasks[: first_task + (first_step > 0)])
        G.load_state_dict(resume["G"])
        D.load_state_dict(resume["D"])
        _set_rng_state(gen, dgen, resume["rng"])  # last: building the method's memory may have drawn numbers

    def diverged(t: int, s: int, what: str) -> Diverged:
        return Diverged(method_name, t, bench.tasks[t].name, s, what)

    def same_on_every_rank(what: str) -> None:
        """Several processes: the networks, the method's state and the streams must still be the same on each
        (exactly on the CPU; on a GPU nondeterministic kernels may leave the last bits apart)."""
        if ranks.several:
            ranks.check_same(what, {"G": G, "D": D, "method state": method.state_dict(), "gen": gen, "dgen": dgen},
                             tolerance=0.0 if device.type == "cpu" else 1e-3)

    def save_state(t: int, s: int, extra: dict[str, Any]) -> None:
        if on_state is None and not ranks.several:  # several: every rank checks the weights, as rank 0 does
            return
        bad = non_finite(G, D)
        if bad is not None:
            raise diverged(t, s, f"weight {bad} is not finite")
        if on_state is None:
            return
        on_state({"method": method_name, "task": t, "step": s, "global_step": global_step, "G": G.state_dict(), "D": D.state_dict(),
                  "method_state": method.state_dict(), "records": [r.to_state() for r in records],
                  "curves": [vars(c) for c in curves], "rng": _rng_state(gen, dgen), "initial": initial, **extra})

    def segment_end(s: int) -> int:
        """The step after the last of the segment that starts at ``s``: the next saved state or the task's end."""
        every = cfg.checkpoint_every
        return min(cfg.steps, (s // every + 1) * every) if every and on_state is not None else cfg.steps

    for t in range(first_task, len(bench.tasks)):
        task = bench.tasks[t]
        start, cpu_start = device_time(device), time.process_time()
        mid_task = resume is not None and t == first_task and first_step > 0
        if not mid_task:
            method.before_task(t, task)
        opt_g = torch.optim.Adam(list(method.g_parameters()), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **adam)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **adam) if use_gan else None
        optimizers = [o for o in (opt_g, opt_d) if o is not None]
        schedules = [lr_schedule(o, cfg) for o in optimizers]
        sums: dict[str, torch.Tensor] = {}
        batch_seconds = 0.0
        if mid_task:
            for o, o_state in zip(optimizers, resume["optimizers"]):
                o.load_state_dict(o_state)
            for sched, sched_state in zip(schedules, resume["schedules"]):
                sched.load_state_dict(sched_state)
            if "scaler" in resume:
                scaler.load_state_dict(resume["scaler"])
            sums = {k: torch.tensor(v, dtype=acc, device=device) for k, v in resume["sums"].items()}
            start -= resume["seconds"]
            cpu_start -= resume["cpu_seconds"]
            batch_seconds = resume.get("batch_seconds", 0.0)
        G.train()
        D.train()
        watch = LossWatch(device.type == "cpu", lambda step, what, t=t: diverged(t, step, what))

        def make_batch(t: int = t, task: Task = task) -> Batch:
            batch = ranks.share(method.batch(t, task)).to(device)
            if cuda:
                batch.x = batch.x.contiguous(memory_format=torch.channels_last)
                batch.y = batch.y.contiguous(memory_format=torch.channels_last)
            return batch

        arch_terms = [m for m in G.modules() if callable(getattr(m, "auxiliary_loss", None))]
        feed = BatchFeed(make_batch, device, ahead=cls.batch_ahead)
        try:
            for s in range(first_step if mid_task else 0, cfg.steps):
                if feed.left == 0:
                    feed.start(segment_end(s) - s)
                batch = feed.next()
                x, y = batch.x, batch.y
                with autocast():
                    fake = G(x)
                step = Step(t, s, batch, fake)
                losses: dict[str, torch.Tensor] = {}
                if use_gan:
                    judged = slice(None) if bool(batch.judged.all()) else batch.judged.to(device)
                    xj, yj, fake_j = x[judged], y[judged], fake[judged]
                    opt_d.zero_grad(set_to_none=True)
                    if len(xj):  # (a process's share of a batch may hold no judged sample)
                        with autocast():
                            d_real, d_fake = D(xj, yj), D(xj, fake_j.detach())
                        loss_d = scaled(0.5 * (gan_loss(d_real, True, cfg.gan_mode) + gan_loss(d_fake, False, cfg.gan_mode)), batch.gan_scale)
                        scaler.scale(loss_d).backward()
                    else:
                        loss_d = torch.zeros((), device=device)
                    loss_d = ranks.average(D.parameters(), {"d": loss_d})["d"]  # several processes: the whole batch's
                    scaler.unscale_(opt_d)  # the hooks and the penalty see the true gradient
                    d_step = Step(t, s, batch, fake.detach())
                    method.discriminator_gradients(d_step)
                    extra_d = method.discriminator_loss(d_step)
                    if extra_d is not None:
                        extra_d.backward()
                        losses["d_extra"] = extra_d.detach()
                    watch.add(s + 1, "discriminator", loss_d if extra_d is None else loss_d + extra_d)
                    scaler.step(opt_d)
                    losses["d"] = loss_d.detach()
                loss_c = content_loss(fake, y, batch.weight)
                loss_g = cfg.lambda_content * loss_c
                losses["content"] = loss_c.detach()
                for net in arch_terms:  # an architecture's own supervision of its parts (nets.gated: the colour stage)
                    loss_a = net.auxiliary_loss(y, batch.weight)
                    if loss_a is not None:
                        loss_g = loss_g + cfg.lambda_content * loss_a
                        losses["arch"] = loss_a.detach()
                if use_gan and len(xj):
                    with no_weight_grads(D), autocast():
                        pred = D(xj, fake_j)
                    loss_adv = scaled(gan_loss(pred, True, cfg.gan_mode), batch.gan_scale)
                    loss_g = loss_g + cfg.lambda_adv * loss_adv
                    losses["adv"] = loss_adv.detach()
                elif use_gan:
                    losses["adv"] = torch.zeros((), device=device)
                extra_g = method.generator_loss(step)
                if extra_g is not None:
                    loss_g = loss_g + extra_g
                    losses["g_extra"] = extra_g.detach()
                opt_g.zero_grad(set_to_none=True)
                scaler.scale(loss_g).backward()
                if ranks.several:  # the gradients and losses of the whole batch
                    losses["g"] = loss_g.detach()
                    losses = ranks.average([p for group in opt_g.param_groups for p in group["params"]], losses)
                    loss_g = losses.pop("g")
                watch.add(s + 1, "generator", loss_g)
                scaler.step(opt_g)
                scaler.update()
                method.after_step(step)
                for sched in schedules:
                    sched.step()
                global_step += 1
                for k, v in losses.items():
                    sums[k] = sums[k] + v.to(acc) if k in sums else v.to(acc)
                if (s + 1) % LOG_EVERY == 0:
                    watch.check()
                if log is not None and (s % LOG_EVERY == 0 or s == cfg.steps - 1):
                    for k, v in losses.items():
                        log_scalar(f"loss/{k}", float(v))
                if on_step is not None:
                    on_step(1)
                if cfg.eval_every and global_step % cfg.eval_every == 0 and not ranks.main:
                    ranks.barrier()  # while rank 0 evaluates
                elif cfg.eval_every and global_step % cfg.eval_every == 0:
                    eval_start, eval_cpu = device_time(device), time.process_time()
                    scores = [evaluate_task(method.eval_generator(j), bench.tasks[j], device, convention) for j in range(t + 1)]
                    curves.append(CurvePoint(global_step, t, scores))
                    if on_curve is not None:
                        on_curve(curves[-1])
                    start += device_time(device) - eval_start  # evaluation is not training time
                    cpu_start += time.process_time() - eval_cpu
                    ranks.barrier()
                if cfg.checkpoint_every and (s + 1) % cfg.checkpoint_every == 0 and s + 1 < cfg.steps:
                    watch.check()
                    save_state(t, s + 1, {"optimizers": [o.state_dict() for o in optimizers], "schedules": [sc.state_dict() for sc in schedules],
                                          "sums": {k: float(v) for k, v in sums.items()}, "seconds": time.perf_counter() - start,
                                          "cpu_seconds": time.process_time() - cpu_start, "batch_seconds": batch_seconds + feed.waited,
                                          **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})})
            watch.check()
        finally:
            feed.close()
        batch_seconds += feed.waited
        method.after_task(t, task)
        seconds, cpu_seconds = device_time(device) - start, time.process_time() - cpu_start
        bad = non_finite(G, D)
        if bad is not None:
            raise diverged(t, cfg.steps, f"weight {bad} is not finite")
        same_on_every_rank(f"{method_name} after task {t + 1}")
        if not ranks.main:  # rank 0 evaluates, writes, and draws what its pictures draw: then every rank goes on with its streams
            records.append(TaskRecord(t, [], seconds, method.memory(), G, method, {}, cpu_seconds))
            ranks.sync_streams(gen, dgen)
            if t + 1 < len(bench.tasks):
                save_state(t + 1, 0, {})
            continue
        scores = [evaluate_task(method.eval_generator(j), bench.tasks[j], device, convention) for j in range(t + 1)]
        for j, sc in enumerate(scores):
            for m, v in sc.items():
                log_scalar(f"{m}/{bench.tasks[j].name}", v)
        # forward transfer: the next task as this generator answers it before training on it (not defined for a
        # method told the task identity, whose answer for a task does not exist before it is trained)
        ahead = None
        if t + 1 < len(bench.tasks) and not cls.needs_task_id:
            ahead = evaluate_task(method.eval_generator(t + 1), bench.tasks[t + 1], device, convention)
        rec = TaskRecord(t, scores, seconds, method.memory(), G, method, {k: float(v) / cfg.steps for k, v in sums.items()}, cpu_seconds,
                         ahead, initial if t == 0 else None, batch_seconds)
        records.append(rec)
        if on_task is not None:
            on_task(rec)
        ranks.sync_streams(gen, dgen)
        if t + 1 < len(bench.tasks):
            save_state(t + 1, 0, {})  # after on_task: what it drew from the random streams (pictures) is included
    return records
