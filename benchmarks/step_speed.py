"""How close a training step comes to the machine's limit, in one run: for G + D training steps at each image size
and dtype, the FLOPs of a step (counted with torch.utils.flop_counter), the achieved FLOP/s against a peak
measured here (the fastest of the networks' own convolution shapes, same dtype), the images/s of the real
training loop (``assocgan.train.train_method``, method tl) against a minimal reference loop (the same networks
and optimisers, one batch already on the device, nothing else), and the share of the loop's time spent making
batches (its wait for the batch feed) next to what making one batch costs by itself.

    python benchmarks/step_speed.py                     # 64, 128 and 224 px; fp32 and bf16; cuda if available
    python benchmarks/step_speed.py --quick --threads 1 # a few minutes on a 2-core CPU
    python benchmarks/step_speed.py --sizes 128 --dtypes bf16 --steps 50 --device cuda
    python benchmarks/step_speed.py --sizes 64 --dtypes bf16 --threads 1 --steps 10   # the two generators side by side

Networks: 64 px as the quick preset (ngf = ndf = 32, batch 8; the pix2pix U-Net with its global context, and the
gated U-Net); 128 and 224 px as the paper preset (ngf = ndf = 64, batch 16); --batch overrides. The adversarial term is on (1e-3) so that every step
trains D as well. Targets (printed with each row): the loop within 10% of the reference's images/s on a GPU
(5% on a CPU), batch making under 5% of the loop's time, bf16 at least 1.5x fp32 at 128 px and above. With several
``--archs`` each size and dtype is timed for each generator architecture in turn, and each row after the first says its
step time as a multiple of the first architecture's (target: the gated U-Net at most 1.5x the U-Net's).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from assocgan.config import make_config
from assocgan.data.benchmarks import Benchmark
from assocgan.data.tasks import Task
from assocgan.losses import content_loss, gan_loss
from assocgan.methods import Context, get_method
from assocgan.nets.layers import no_weight_grads
from assocgan.train import autocast_factory, build_networks, device_time, pick_device, train_method

DTYPES = {"fp32": ("off", torch.float32), "bf16": ("bf16", torch.bfloat16), "fp16": ("fp16", torch.float16)}


def config(size: int, amp: str, batch: int | None, steps: int, threads: int, arch: str = "pix2pix"):
    paper = size > 64
    base = dict(ngf=64, ndf=64, batch_size=16, context=False) if paper else dict(ngf=32, ndf=32, batch_size=8, context=True)
    if batch:
        base["batch_size"] = batch
    return make_config(
        "quick",
        **base,
        arch=arch,
        size=size,
        amp=amp,
        steps=steps,
        lambda_adv=1e-3,
        lr=2e-4,
        beta1=0.5,
        lr_schedule="constant",
        n_train=64,
        n_test=4,
        threads=threads,
        checkpoint_every=0,
        eval_every=0,
        methods=["tl"],
    )


def synthetic_task(size: int, n: int, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    u8 = lambda k: torch.randint(0, 256, (k, 3, size, size), generator=g, dtype=torch.uint8)
    return Task("synthetic", u8(n), u8(n), u8(4), u8(4))


def reference_step(G, D, opt_g, opt_d, x, y, autocast, lambda_adv: float):
    """One G + D step with nothing around it."""
    with autocast():
        fake = G(x)
        d_real, d_fake = D(x, y), D(x, fake.detach())
    loss_d = 0.5 * (gan_loss(d_real, True, "lsgan") + gan_loss(d_fake, False, "lsgan"))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    with no_weight_grads(D), autocast():
        pred = D(x, fake)
    loss_g = content_loss(fake, y) + lambda_adv * gan_loss(pred, True, "lsgan")
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


def reference(cfg, device, warmup: int, steps: int, blocks: int):
    """(seconds a step, FLOPs a step) of the minimal loop: the loop's networks and optimisers, a batch on the device;
    the seconds of the fastest of ``blocks`` blocks of ``steps`` steps (the machine may be shared)."""
    torch.manual_seed(0)
    G, D = build_networks(cfg, device)
    adam = {"fused": True} if device.type == "cuda" else {}
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **adam)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **adam)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.rand(cfg.batch_size, 3, cfg.size, cfg.size, device=device).contiguous(memory_format=fmt)
    y = torch.rand(cfg.batch_size, 3, cfg.size, cfg.size, device=device).contiguous(memory_format=fmt)
    autocast = autocast_factory(cfg, device)
    with FlopCounterMode(display=False) as counter:
        reference_step(G, D, opt_g, opt_d, x, y, autocast, cfg.lambda_adv)
    for _ in range(warmup):
        reference_step(G, D, opt_g, opt_d, x, y, autocast, cfg.lambda_adv)
    best = float("inf")
    for _ in range(blocks):
        t0 = device_time(device)
        for _ in range(steps):
            reference_step(G, D, opt_g, opt_d, x, y, autocast, cfg.lambda_adv)
        best = min(best, (device_time(device) - t0) / steps)
    return best, counter.get_total_flops(), (G, D, x)


def training_loop(cfg, device, warmup: int, steps: int, blocks: int):
    """(seconds a step, share of the loop's time making batches) of the real loop: the fastest of ``blocks``
    blocks of ``steps`` steps after ``warmup`` (``cfg.steps`` is warmup + blocks * steps)."""
    bench = Benchmark("synthetic", "psnr", [synthetic_task(cfg.size, cfg.n_train)])
    marks = {}
    ends = {warmup + k * steps for k in range(blocks + 1)}

    def on_step(_):
        marks["n"] = marks.get("n", 0) + 1
        if marks["n"] in ends:
            marks[marks["n"]] = device_time(device)

    rec = train_method("tl", bench, cfg, device=device, on_step=on_step)[0]
    best = min(marks[warmup + (k + 1) * steps] - marks[warmup + k * steps] for k in range(blocks)) / steps
    return best, rec.batch_seconds / rec.train_seconds


def batch_alone(cfg, device, n: int = 5) -> float:
    """Seconds to make one batch on the loop's path (the method's hook, to the device, converted), in turn."""
    task = synthetic_task(cfg.size, cfg.n_train)
    G, D = build_networks(cfg, device)
    gen = torch.Generator().manual_seed(0)
    ctx = Context(cfg, G, D, gen, 1, ["synthetic"], contextlib.nullcontext, device=device)
    method = get_method("tl")(ctx)
    method.batch(0, task).to(device)
    t0 = device_time(device)
    for _ in range(n):
        method.batch(0, task).to(device)
    return (device_time(device) - t0) / n


def conv_peak(G: nn.Module, D: nn.Module, x: torch.Tensor, dtype: torch.dtype, device, budget: float = 0.3) -> tuple[float, str]:
    """The best FLOP/s of the networks' own convolutions (each shape, forward, in ``dtype``), and that shape."""
    shapes = {}

    def seen(m, inputs, output):  # returns None: the output is left as it is
        shapes.setdefault((id(m), tuple(inputs[0].shape)), (m, tuple(inputs[0].shape)))

    hooks = [m.register_forward_hook(seen) for m in list(G.modules()) + list(D.modules()) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        D(x, G(x))
    for h in hooks:
        h.remove()
    best, where = 0.0, ""
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    for m, shape in shapes.values():
        inp = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
        w = m.weight.detach().to(dtype)
        b = None if m.bias is None else m.bias.detach().to(dtype)
        if isinstance(m, nn.ConvTranspose2d):
            op = lambda: F.conv_transpose2d(inp, w, b, m.stride, m.padding)
        else:
            op = lambda: F.conv2d(inp, w, b, m.stride, m.padding)
        with FlopCounterMode(display=False) as counter:
            op()
        flops = counter.get_total_flops()
        op()
        reps, t0 = 0, device_time(device)
        while True:
            op()
            reps += 1
            if reps % 4 == 0 and device_time(device) - t0 > budget:
                break
        rate = flops * reps / (device_time(device) - t0)
        if rate > best:
            kind = "convT" if isinstance(m, nn.ConvTranspose2d) else "conv"
            best, where = rate, f"{kind} {m.in_channels}->{m.out_channels} k{m.kernel_size[0]}s{m.stride[0]} on {shape[2]}x{shape[3]}"
    return best, where


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", help="image sizes, comma-separated (multiples of 16; default 64,128,224, with --quick 64,128)")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32, bf16 and/or fp16 (fp16: CUDA only)")
    p.add_argument("--steps", type=int, default=30, help="timed steps of each loop")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    p.add_argument("--blocks", type=int, default=3, help="timed blocks of --steps steps each; the fastest counts (a shared machine)")
    p.add_argument("--batch", type=int, help="batch size for every size (default: the preset's)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: all cores)")
    p.add_argument("--archs", default="pix2pix,gated", help="generator architectures, comma-separated (pix2pix, gated): timed side by side")
    p.add_argument("--quick", action="store_true", help="a few minutes on a small CPU: 64 and 128 px, batch 4, 3 blocks of 4 steps after 2")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.warmup, args.batch = args.sizes or "64,128", 4, 2, args.batch or 4
    device = pick_device(args.device)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    sizes = [int(s) for s in (args.sizes or "64,128,224").split(",")]
    dtypes = args.dtypes.split(",")
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)"
    )
    print(f"device: {device} ({name}); torch {torch.__version__}; the fastest of {args.blocks} blocks of {args.steps} timed steps, after {args.warmup}")
    loop_target = 0.10 if device.type == "cuda" else 0.05
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    head = (
        f"{'arch':>8} {'px':>4} {'dtype':>5} {'batch':>5} {'GFLOP/step':>10} {'peak GF/s':>9} {'ref GF/s':>8} {'%peak':>6} "
        f"{'ref img/s':>9} {'loop img/s':>10} {'loop/ref':>8} {'batch ms':>8} {'alone %':>7} {'wait %':>6} {'bf16/fp32':>9} {'step/1st':>8}"
    )
    print(head)
    rows, ok = {}, {"loop": True, "batch": True, "bf16": True}
    for size, dt, arch in [(s, d, a) for s in sizes for d in dtypes for a in archs]:
        amp, dtype = DTYPES[dt]
        cfg = config(size, amp, args.batch, args.warmup + args.blocks * args.steps, args.threads or 0, arch)
        ref_s, flops, (G, D, x) = reference(cfg, device, args.warmup, args.steps, args.blocks)
        peak, where = conv_peak(G, D, x, dtype, device)
        loop_s, wait = training_loop(cfg, device, args.warmup, args.steps, args.blocks)
        alone = batch_alone(cfg, device)
        n = cfg.batch_size
        ref_ips, loop_ips = n / ref_s, n / loop_s
        rows[(size, dt, arch)] = loop_ips
        ratio = ""
        if dt == "bf16" and (size, "fp32", arch) in rows:
            r = loop_ips / rows[(size, "fp32", arch)]
            ratio = f"{r:.2f}x"
            if size >= 128 and r < 1.5:
                ok["bf16"] = False
        if loop_ips < (1 - loop_target) * ref_ips:
            ok["loop"] = False
        if wait >= 0.05:
            ok["batch"] = False
        vs_first = f"{rows[(size, dt, archs[0])] / loop_ips:.2f}x" if arch != archs[0] else ""
        print(
            f"{arch:>8} {size:>4} {dt:>5} {n:>5} {flops / 1e9:>10.2f} {peak / 1e9:>9.1f} {flops / ref_s / 1e9:>8.1f} {100 * flops / ref_s / peak:>5.0f}% "
            f"{ref_ips:>9.2f} {loop_ips:>10.2f} {loop_ips / ref_ips:>8.3f} {1e3 * alone:>8.2f} {100 * alone / loop_s:>6.2f}% {100 * wait:>5.2f}% {ratio:>9} {vs_first:>8}",
            flush=True,
        )
        print(f"{'':>10} peak: {where}")
    measured = "bf16" in dtypes and "fp32" in dtypes and any(s >= 128 for s in sizes)
    verdict = lambda k: "met" if ok[k] else "NOT met"
    print(
        f"targets: loop >= {1 - loop_target:.2f} x reference images/s: {verdict('loop')}; batch making < 5% of the loop's time: "
        f"{verdict('batch')}; bf16 >= 1.5x fp32 at 128 px and above: {verdict('bf16') if measured else 'not measured'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
