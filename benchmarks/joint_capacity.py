"""Why joint learning (JL) falls short of the specialists: can the tasks be told apart from their inputs, and
can one generator learn them together when it is even told which task each image belongs to?

    python benchmarks/joint_capacity.py                                   # restore4: each task alone, all, all:oracle
    python benchmarks/joint_capacity.py --runs "noise+impulse;oversharpen+blur;all;all:oracle" --seed 0
    python benchmarks/joint_capacity.py --benchmark tones3
    python benchmarks/joint_capacity.py --chain cartoon,sketch,blueprint --runs "cartoon;cartoon+sketch;all;all:oracle"
    python benchmarks/joint_capacity.py --benchmark mixed4 --arch gated --runs "noise;blur;colorcast;fade;all" --no-identify

Offline joint training (all of a run's tasks mixed in every batch, from scratch), the preset's network (``--arch``
another architecture of the registry), data,
batch, learning rate and cosine schedule, ``steps x number of tasks`` steps so each task sees as many samples
as its specialist (``single``) does. A run is a ``+``-joined list of task names (or ``all``); ``:oracle`` adds a
task-identity input: the U-Net's global context (the FiLM of its decoder) is fed a learned embedding of the
true task instead of the image statistics, so the network need not infer the task. ``--identify`` also trains a
small classifier of the task from each input's global statistics and high-pass energy, and prints its test
accuracy per task: if it is near 100%, the inputs say which task they come from.

``--chain`` builds a chain of tone filters from the built-in photos as ``tones3`` is built (photo -> first filter
-> second ...), for chains other than tones3's. Prints one row per run: the benchmark's metric (PSNR or SSIM)
per task on the test split, beside doing nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from assocgan.config import make_config
from assocgan.data.benchmarks import BuiltinSpec, load_benchmark, tone_tasks
from assocgan.data.tones import FILTERS
from assocgan.metrics import psnr, ssim
from assocgan.nets import UNet, build_generator
from assocgan.nets.unet import image_statistics


class TaskContext(nn.Module):
    """Stands in for the U-Net's global context: FiLM from a learned embedding of the task set in ``task``."""

    def __init__(self, widths: list[int], n_tasks: int):
        super().__init__()
        self.widths = widths
        self.embed = nn.Embedding(n_tasks, 2 * sum(widths))
        nn.init.zeros_(self.embed.weight)
        self.task = torch.zeros(1, dtype=torch.long)

    def forward(self, xs: torch.Tensor):
        film = self.embed(self.task).split([2 * w for w in self.widths], 1)
        return [(1 + f[:, :w, None, None], f[:, w:, None, None]) for f, w in zip(film, self.widths)]


def as_float(a: torch.Tensor) -> torch.Tensor:
    return a.float() / 255


def train_joint(tasks, ids, cfg, oracle: bool, seed: int, metric=psnr) -> dict[str, float]:
    torch.manual_seed(seed)
    net = build_generator(cfg)
    if oracle:
        net.context = TaskContext(net.film_widths, len(tasks))
    steps = cfg.steps * len(ids)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.1 * cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = [ids[i % len(ids)] for i in range(cfg.batch_size)]
        picks = [torch.randint(len(tasks[k].train_x), (1,), generator=gen).item() for k in rows]
        x = as_float(torch.stack([tasks[k].train_x[j] for k, j in zip(rows, picks)]))
        y = as_float(torch.stack([tasks[k].train_y[j] for k, j in zip(rows, picks)]))
        if oracle:
            net.context.task = torch.tensor(rows)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            out = net(x)
        loss = F.mse_loss(out.float(), y)
        for m in net.modules():  # an architecture's own supervision of its parts, as the training loop adds it
            aux = m.auxiliary_loss(y) if callable(getattr(m, "auxiliary_loss", None)) else None
            loss = loss if aux is None else loss + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    scores = {}
    net.eval()
    with torch.no_grad():
        for k, t in enumerate(tasks):
            x = as_float(t.test_x)
            if oracle:
                net.context.task = torch.full((len(x),), k)
            scores[t.name] = metric(net(x).clamp(0, 1), as_float(t.test_y)).mean().item()
    return scores


def task_features(x: torch.Tensor) -> torch.Tensor:
    xs = as_float(x) * 2 - 1
    lap = 4 * xs[..., 1:-1, 1:-1] - xs[..., :-2, 1:-1] - xs[..., 2:, 1:-1] - xs[..., 1:-1, :-2] - xs[..., 1:-1, 2:]
    return torch.cat([image_statistics(xs), lap.abs().flatten(2).mean(2), lap.pow(2).flatten(2).mean(2).sqrt()], 1)


def identify(tasks, seed: int) -> list[list[int]]:
    """A confusion matrix (rows: true task, columns: predicted) of a small classifier on the test inputs."""
    torch.manual_seed(seed)
    xtr = torch.cat([task_features(t.train_x) for t in tasks])
    ytr = torch.cat([torch.full((len(t.train_x),), k) for k, t in enumerate(tasks)])
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    clf = nn.Sequential(nn.Linear(xtr.shape[1], 128), nn.ReLU(), nn.Linear(128, len(tasks)))
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    for _ in range(3000):
        loss = F.cross_entropy(clf((xtr - mu) / sd), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return [[int((clf((task_features(t.test_x) - mu) / sd).argmax(1) == j).sum()) for j in range(len(tasks))] for t in tasks]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="restore4")
    p.add_argument("--chain", default=None, help="comma-separated tone filters chained from the built-in photos, instead of --benchmark")
    p.add_argument("--runs", default=None, help="';'-separated runs (see above; default: each task alone, all, and all:oracle for the pix2pix U-Net)")
    p.add_argument("--preset", default="quick")
    p.add_argument("--arch", default=None, help="the generator architecture (default: the preset's)")
    p.add_argument("--ngf", type=int, default=0, help="generator width (default: the preset's)")
    p.add_argument("--steps", type=int, default=0, help="steps per task (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--identify", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = make_config(args.preset, steps=args.steps or None, arch=args.arch, ngf=args.ngf or None)
    if args.chain:
        filters = [f.strip() for f in args.chain.split(",") if f.strip()]
        if not filters or any(f not in FILTERS for f in filters):
            p.error(f"--chain {args.chain!r}: comma-separated filters from {', '.join(FILTERS)}")
        spec = BuiltinSpec("chain", "ssim", tuple((f, f) for f in filters), "tones")
        tasks, title, metric_name = tone_tasks(spec, cfg.size, cfg.n_train, cfg.n_test, args.seed), "chain " + " -> ".join(["photo"] + filters), "ssim"
    else:
        bench = load_benchmark(args.benchmark, size=cfg.size, n_train=cfg.n_train, n_test=cfg.n_test, seed=args.seed)
        tasks, title, metric_name = bench.tasks, bench.name, bench.metric
    metric, fmt = (ssim, "10.3f") if metric_name == "ssim" else (psnr, "10.2f")
    names = [t.name for t in tasks]
    params = sum(p.numel() for p in build_generator(cfg).parameters())
    print(
        f"{title}, preset {args.preset}, {cfg.arch} generator (ngf {cfg.ngf}, {params / 1e6:.2f} M weights), seed {args.seed}: "
        f"{metric_name.upper()} per task on the test split"
    )
    inputs = {t.name: metric(as_float(t.test_x), as_float(t.test_y)).mean().item() for t in tasks}
    print(f"{'run':28s} {'steps':>6s} " + " ".join(f"{n:>10s}" for n in names) + "    mean")
    print(f"{'input (do nothing)':28s} {'':>6s} " + " ".join(f"{inputs[n]:{fmt}}" for n in names) + f"  {sum(inputs.values()) / len(names):6.3f}")
    runs = args.runs or ";".join(names + ["all"] + (["all:oracle"] if cfg.arch == "pix2pix" else []))
    for spec in [s.strip() for s in runs.split(";") if s.strip()]:
        subset, _, mode = spec.partition(":")
        chosen = names if subset == "all" else subset.split("+")
        unknown = [n for n in chosen if n not in names]
        if unknown or mode not in ("", "oracle"):
            p.error(f"--runs {spec!r}: tasks are {', '.join(names)} or all; the only mode is :oracle")
        if mode == "oracle" and not isinstance(build_generator(cfg), UNet):
            p.error(f"--runs {spec!r}: :oracle replaces the pix2pix U-Net's context; give --arch pix2pix")
        t0 = time.perf_counter()
        scores = train_joint(tasks, [names.index(n) for n in chosen], cfg, mode == "oracle", args.seed, metric)
        cells = " ".join(f"{scores[n]:{fmt}}" if n in chosen else f"{'-':>10s}" for n in names)
        mean = sum(scores[n] for n in chosen) / len(chosen)
        took = time.perf_counter() - t0
        print(
            f"{spec:28s} {cfg.steps * len(chosen):6d} {cells}  {mean:6.3f}   ({took:.0f} s, {1e3 * took / (cfg.steps * len(chosen)):.0f} ms a step)", flush=True
        )
    if args.identify:
        conf = identify(tasks, args.seed)
        acc = sum(conf[k][k] for k in range(len(tasks))) / sum(map(sum, conf))
        print(f"task identified from the input (test split): {acc:.1%}; per task (true -> predicted counts):")
        for n, row in zip(names, conf):
            print(f"  {n:12s} " + " ".join(f"{c:4d}" for c in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
