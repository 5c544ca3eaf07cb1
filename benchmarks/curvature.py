"""Does a quadratic penalty's weight of 1 mean what it says? The curvature every quadratic penalty uses
(``fisher.gauss_newton_diagonal``) against the measured loss rise of a trained generator, beside the earlier
calibration (the empirical Fisher times P / (2 mse)).

    python benchmarks/curvature.py                                  # restore4, the quick preset's size and width
    python benchmarks/curvature.py --benchmark tones3 --steps 300
    python benchmarks/curvature.py --size 32 --ngf 8 --steps 150    # the test's setting

For each task: the preset's U-Net is trained on the task alone (Adam, ``--steps`` steps of 8 pairs), then on 32
training pairs the curvature H is estimated and the content loss is measured at the weights and at theta +- delta
for ``--draws`` random perturbations (each weight's delta drawn with a spread of 1% of its tensor's mean
magnitude; the mean of + and - cancels the gradient's share). Prints the predicted rise 0.5 * sum H delta^2
over the measured one, for H and for the earlier calibration: 1.00 is a penalty in the units of the loss.
"""

from __future__ import annotations

import argparse
import time

import torch

from assocgan.config import PRESETS
from assocgan.data.benchmarks import load_benchmark
from assocgan.fisher import content_curvature, per_sample_content_loss, per_sample_fisher, predicted_and_measured_rise
from assocgan.losses import content_loss
from assocgan.nets.unet import UNet


def measure(task, size_ngf, steps: int, draws: int, seed: int) -> dict:
    torch.manual_seed(seed)
    G = UNet(ngf=size_ngf, context=True)
    opt = torch.optim.Adam(G.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = task.sample(8, gen)
        loss = content_loss(G(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = task.sample(32, gen)
    curvature, mse = content_curvature(G, x, y, torch.Generator().manual_seed(seed + 1))
    empirical = per_sample_fisher(G, lambda call, xi, yi: per_sample_content_loss(call(xi), yi[None])[0], x, y)
    earlier = {k: v * y[0].numel() / (2 * mse) for k, v in empirical.items()}
    rise, predicted = predicted_and_measured_rise(G, x, y, {"new": curvature, "old": earlier}, torch.Generator().manual_seed(seed + 2), draws)
    return {"mse": mse, "rise": rise / draws, "new": predicted["new"] / rise, "old": predicted["old"] / rise}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="restore4")
    p.add_argument("--preset", default="quick")
    p.add_argument("--size", type=int, default=0, help="image size (default: the preset's)")
    p.add_argument("--ngf", type=int, default=0, help="generator width (default: the preset's)")
    p.add_argument("--steps", type=int, default=300, help="training steps before the curvature is measured")
    p.add_argument("--draws", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    size, ngf = args.size or preset.get("size", 64), args.ngf or preset.get("ngf", 32)
    bench = load_benchmark(args.benchmark, size=size, n_train=64, n_test=4, seed=args.seed)
    print(f"{args.benchmark}, {size} px, ngf {ngf}, {args.steps} steps, {args.draws} perturbations; predicted / measured loss rise")
    print("| task | content loss | measured rise | Gauss-Newton diagonal | earlier: empirical Fisher x P/(2 mse) | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for task in bench.tasks:
        t0 = time.time()
        r = measure(task, ngf, args.steps, args.draws, args.seed)
        print(f"| {task.name} | {r['mse']:.5f} | {r['rise']:.2e} | {r['new']:.2f}x | {r['old']:.2f}x | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
