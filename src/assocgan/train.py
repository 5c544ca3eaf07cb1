"""The one training loop shared by every method."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from .config import RunConfig
from .data.benchmarks import Benchmark
from .data.tasks import Task
from .errors import UserError
from .evaluate import evaluate_task
from .losses import content_loss, gan_loss
from .methods import Context, Method, Step, get_method
from .nets import PatchGAN
from .nets.layers import no_weight_grads


def pick_device(name: str | None = None) -> torch.device:
    """The torch device ``name`` (default: cuda if available, else cpu); a UserError if it cannot be used here."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this torch has no CUDA device available (torch {torch.__version__}); leave --device out or give cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: MPS is not available here; leave --device out or give cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: unsupported device type {dev.type!r}; give cpu or cuda")
    return dev


def autocast_factory(cfg: RunConfig, device: torch.device) -> Callable[[], Any]:
    if not cfg.amp:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


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

    def to_state(self) -> dict[str, Any]:
        return {"t": self.t, "scores": self.scores, "train_seconds": self.train_seconds, "memory": self.memory,
                "losses": self.losses, "cpu_seconds": self.cpu_seconds, "ahead": self.ahead, "initial": self.initial}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "TaskRecord":
        return cls(d["t"], d["scores"], d["train_seconds"], d["memory"], None, None, d["losses"], d["cpu_seconds"], d.get("ahead"), d.get("initial"))


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


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(state["gen"])
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
    return G, D


def check_method(method_name: str, bench: Benchmark, cfg: RunConfig) -> None:
    """Build ``method_name`` as the loop will (on random streams of its own, which leave the run's untouched),
    so that a bad option or configuration is refused before anything is trained."""
    cls = get_method(method_name)
    cls.check_config(cfg)
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
) -> list[TaskRecord]:
    """Train one method over the benchmark's tasks in order; evaluate after each task.

    ``on_state`` receives the full training state (networks, optimisers, schedules, random streams, the
    method's ``state_dict`` and the records so far) after each task and every ``cfg.checkpoint_every`` steps;
    ``resume`` is such a state, from which training goes on exactly as it would have without the interruption.
    A non-finite loss or weight raises ``Diverged``.
    """
    device = device or pick_device()
    set_threads(cfg)
    cls = get_method(method_name)
    cls.check_config(cfg)
    torch.manual_seed(cfg.seed)  # the same initial networks for every method of a run
    G, D = build_networks(cfg, device, cls)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    global_step = 0

    def log_scalar(name: str, value: float) -> None:
        if log is not None:
            log(f"{method_name}/{name}", float(value), global_step)

    ctx = Context(cfg, G, D, gen, len(bench.tasks), bench.task_names, autocast_factory(cfg, device), log_scalar, device)
    method = cls(ctx, **cfg.method_options.get(method_name, {}))
    method.check_tasks(bench.tasks)
    autocast = ctx.autocast
    convention = cfg.convention()
    use_gan = cfg.lambda_adv > 0
    records: list[TaskRecord] = []
    curves: list[CurvePoint] = []
    first_task, first_step = 0, 0
    # the untrained generator on every task: the b_j of forward transfer (evaluation draws no random numbers)
    initial = [evaluate_task(G, task, device, convention) for task in bench.tasks] if resume is None else resume.get("initial")
    if resume is not None:
        first_task, first_step, global_step = resume["task"], resume["step"], resume["global_step"]
        records, curves = history(resume)
        method.load_state_dict(resume["method_state"], bench.tasks[: first_task + (first_step > 0)])
        G.load_state_dict(resume["G"])
        D.load_state_dict(resume["D"])
        _set_rng_state(gen, resume["rng"])  # last: building the method's memory may have drawn numbers

    def diverged(t: int, s: int, what: str) -> Diverged:
        return Diverged(method_name, t, bench.tasks[t].name, s, what)

    def save_state(t: int, s: int, extra: dict[str, Any]) -> None:
        if on_state is None:
            return
        bad = non_finite(G, D)
        if bad is not None:
            raise diverged(t, s, f"weight {bad} is not finite")
        on_state({"method": method_name, "task": t, "step": s, "global_step": global_step, "G": G.state_dict(), "D": D.state_dict(),
                  "method_state": method.state_dict(), "records": [r.to_state() for r in records],
                  "curves": [vars(c) for c in curves], "rng": _rng_state(gen), "initial": initial, **extra})

    for t in range(first_task, len(bench.tasks)):
        task = bench.tasks[t]
        start, cpu_start = time.perf_counter(), time.process_time()
        mid_task = resume is not None and t == first_task and first_step > 0
        if not mid_task:
            method.before_task(t, task)
        opt_g = torch.optim.Adam(list(method.g_parameters()), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) if use_gan else None
        optimizers = [o for o in (opt_g, opt_d) if o is not None]
        schedules = [lr_schedule(o, cfg) for o in optimizers]
        sums: dict[str, float] = {}
        if mid_task:
            for o, o_state in zip(optimizers, resume["optimizers"]):
                o.load_state_dict(o_state)
            for sched, sched_state in zip(schedules, resume["schedules"]):
                sched.load_state_dict(sched_state)
            sums = dict(resume["sums"])
            start -= resume["seconds"]
            cpu_start -= resume["cpu_seconds"]
        G.train()
        D.train()
        for s in range(first_step if mid_task else 0, cfg.steps):
            batch = method.batch(t, task).to(device)
            x, y = batch.x, batch.y
            with autocast():
                fake = G(x)
            step = Step(t, s, batch, fake)
            losses: dict[str, torch.Tensor] = {}
            if use_gan:
                judged = slice(None) if bool(batch.judged.all()) else batch.judged.to(device)
                xj, yj, fake_j = x[judged], y[judged], fake[judged]
                with autocast():
                    d_real, d_fake = D(xj, yj), D(xj, fake_j.detach())
                loss_d = 0.5 * (gan_loss(d_real, True, cfg.gan_mode) + gan_loss(d_fake, False, cfg.gan_mode))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                d_step = Step(t, s, batch, fake.detach())
                method.discriminator_gradients(d_step)
                extra_d = method.discriminator_loss(d_step)
                if extra_d is not None:
                    extra_d.backward()
                    losses["d_extra"] = extra_d.detach()
                total_d = loss_d if extra_d is None else loss_d + extra_d
                if not bool(torch.isfinite(total_d)):
                    raise diverged(t, s + 1, f"the discriminator's loss is {float(total_d.detach())}")
                opt_d.step()
                losses["d"] = loss_d.detach()
            loss_c = content_loss(fake, y, batch.weight)
            loss_g = cfg.lambda_content * loss_c
            losses["content"] = loss_c.detach()
            if use_gan:
                with no_weight_grads(D), autocast():
                    pred = D(xj, fake_j)
                loss_adv = gan_loss(pred, True, cfg.gan_mode)
                loss_g = loss_g + cfg.lambda_adv * loss_adv
                losses["adv"] = loss_adv.detach()
            extra_g = method.generator_loss(step)
            if extra_g is not None:
                loss_g = loss_g + extra_g
                losses["g_extra"] = extra_g.detach()
            if not bool(torch.isfinite(loss_g)):
                raise diverged(t, s + 1, f"the generator's loss is {float(loss_g.detach())}")
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            method.after_step(step)
            for sched in schedules:
                sched.step()
            global_step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if log is not None and (s % 25 == 0 or s == cfg.steps - 1):
                for k, v in losses.items():
                    log_scalar(f"loss/{k}", float(v))
            if on_step is not None:
                on_step(1)
            if cfg.eval_every and global_step % cfg.eval_every == 0:
                eval_start, eval_cpu = time.perf_counter(), time.process_time()
                scores = [evaluate_task(method.eval_generator(j), bench.tasks[j], device, convention) for j in range(t + 1)]
                curves.append(CurvePoint(global_step, t, scores))
                if on_curve is not None:
                    on_curve(curves[-1])
                start += time.perf_counter() - eval_start  # evaluation is not training time
                cpu_start += time.process_time() - eval_cpu
            if cfg.checkpoint_every and (s + 1) % cfg.checkpoint_every == 0 and s + 1 < cfg.steps:
                save_state(t, s + 1, {"optimizers": [o.state_dict() for o in optimizers], "schedules": [sc.state_dict() for sc in schedules],
                                      "sums": sums, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start})
        method.after_task(t, task)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        bad = non_finite(G, D)
        if bad is not None:
            raise diverged(t, cfg.steps, f"weight {bad} is not finite")
        scores = [evaluate_task(method.eval_generator(j), bench.tasks[j], device, convention) for j in range(t + 1)]
        for j, sc in enumerate(scores):
            for m, v in sc.items():
                log_scalar(f"{m}/{bench.tasks[j].name}", v)
        # forward transfer: the next task as this generator answers it before training on it (not defined for a
        # method told the task identity, whose answer for a task does not exist before it is trained)
        ahead = None
        if t + 1 < len(bench.tasks) and not cls.needs_task_id:
            ahead = evaluate_task(method.eval_generator(t + 1), bench.tasks[t + 1], device, convention)
        rec = TaskRecord(t, scores, seconds, method.memory(), G, method, {k: v / cfg.steps for k, v in sums.items()}, cpu_seconds,
                         ahead, initial if t == 0 else None)
        records.append(rec)
        if on_task is not None:
            on_task(rec)
        if t + 1 < len(bench.tasks):
            save_state(t + 1, 0, {})  # after on_task: what it drew from the random streams (pictures) is included
    return records
