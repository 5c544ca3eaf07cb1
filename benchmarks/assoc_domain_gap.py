"""Does Assoc-GAN's generator learn the old tasks, or only its own association samples of them?

    python benchmarks/assoc_domain_gap.py                              # tones3, seed 0, --assoc-recolour chain and off
    python benchmarks/assoc_domain_gap.py --benchmark restore4 --seeds 0,1 --recolour chain

Trains Assoc-GAN at the quick preset (one thread) on a built-in benchmark; then, with the generator after the last
task, scores each past task twice: on its real test pairs, and on association samples of it (as the method makes
them while the last task trains: from the last task's training pairs, through the planned chain of mappers,
with the new colours ``--assoc-recolour`` gives). Doing nothing (the input itself) is scored on both. A generator
that scores its association samples far above the real pairs has learned the samples' domain, not the task:
the samples do not look like the task's real inputs. Prints one row per seed, setting and past task, in the
benchmark's metric. Trained through the Python API, which draws no pictures: where the association samples are
random (noise, impulses, new colours) the generator differs a little from the one ``assocgan run`` trains from
the same seed, whose pictures draw from the same stream.
"""

from __future__ import annotations

import argparse

import torch

from assocgan.config import make_config
from assocgan.data.benchmarks import benchmark_for
from assocgan.metrics import psnr, ssim
from assocgan.train import train_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="tones3")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--recolour", default="chain,off", help="--assoc-recolour settings to compare")
    ap.add_argument("--samples", type=int, default=64, help="association samples scored per past task")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'seed':>4} {'recolour':>8} {'task':>12} {'real':>7} {'assoc':>7} {'gap':>7} {'input real':>10} {'input assoc':>11}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for setting in args.recolour.split(","):
            cfg = make_config("quick", benchmark=args.benchmark, seed=seed, threads=1, method_options={"assoc": {"assoc_recolour": setting}})
            bench = benchmark_for(cfg)
            score = ssim if bench.metric == "ssim" else psnr
            rec = train_method("assoc", bench, cfg)[-1]
            method, G = rec.method, rec.generator.eval()
            x_last, y_last = method.ctx.sample(bench.tasks[-1], args.samples)
            with torch.no_grad():
                for j, task in enumerate(bench.tasks[:-1]):
                    x, y = task.test_pairs()
                    with method.ctx.autocast():
                        xa, ya = method.associate(j, x_last, y_last)
                    xa, ya = xa.float(), ya.float()
                    real, made = float(score(G(x).clamp(0, 1), y).mean()), float(score(G(xa).clamp(0, 1), ya).mean())
                    print(
                        f"{seed:>4} {setting:>8} {task.name:>12} {real:7.3f} {made:7.3f} {made - real:+7.3f} "
                        f"{float(score(x, y).mean()):10.3f} {float(score(xa, ya).mean()):11.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
