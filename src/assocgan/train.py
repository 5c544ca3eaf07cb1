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
from .evaluate import evaluate_task
from .losses import content_loss, gan_loss
from .methods import Context, Method, Step, get_method
from .nets import PatchGAN
from .nets.layers import no_weight_grads


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    generator: nn.Module
    method: Method
    losses: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # process CPU time of the same span: comparable between runs on a shared machine


@dataclass
class CurvePoint:
    global_step: int
    t: int
    scores: list[dict[str, float]]


def build_networks(cfg: RunConfig, device: torch.device, method: type[Method] = Method) -> tuple[nn.Module, nn.Module]:
    G = method.build_generator(cfg).to(device)
    D = PatchGAN(6, cfg.ndf, norm=cfg.norm, image_size=cfg.size).to(device)
    return G, D


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
) -> list[TaskRecord]:
    """Train one method over the benchmark's tasks in order; evaluate after each task."""
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
    autocast = ctx.autocast
    use_gan = cfg.lambda_adv > 0
    records: list[TaskRecord] = []

    for t, task in enumerate(bench.tasks):
        start, cpu_start = time.perf_counter(), time.process_time()
        method.before_task(t, task)
        opt_g = torch.optim.Adam(list(method.g_parameters()), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) if use_gan else None
        schedules = [lr_schedule(o, cfg) for o in (opt_g, opt_d) if o is not None]
        sums: dict[str, float] = {}
        G.train()
        D.train()
        for s in range(cfg.steps):
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
            if on_curve is not None and cfg.eval_every and global_step % cfg.eval_every == 0:
                eval_start, eval_cpu = time.perf_counter(), time.process_time()
                scores = [evaluate_task(method.eval_generator(j), bench.tasks[j], device) for j in range(t + 1)]
                on_curve(CurvePoint(global_step, t, scores))
                start += time.perf_counter() - eval_start  # evaluation is not training time
                cpu_start += time.process_time() - eval_cpu
        method.after_task(t, task)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        scores = [evaluate_task(method.eval_generator(j), bench.tasks[j], device) for j in range(t + 1)]
        for j, sc in enumerate(scores):
            for m, v in sc.items():
                log_scalar(f"{m}/{bench.tasks[j].name}", v)
        rec = TaskRecord(t, scores, seconds, method.memory(), G, method, {k: v / cfg.steps for k, v in sums.items()}, cpu_seconds)
        records.append(rec)
        if on_task is not None:
            on_task(rec)
    return records
