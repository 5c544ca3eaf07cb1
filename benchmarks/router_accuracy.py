"""How often the task router (``--router on``) sends a task's test images to that task, without training a generator.

    python benchmarks/router_accuracy.py                         # tones3, seeds 0,1,2
    python benchmarks/router_accuracy.py --benchmark restore4 --seeds 0

The router sees the data and its own mappers, never the generator, so its accuracy is the same for every method
it serves: this trains the router alone over a built-in benchmark's tasks at the quick preset (its mappers, its
calibration and R after each task, from the run's seed, as ``assocgan run --router on`` does) and prints R's
accuracy on each task's test images after each task, per seed, and the mean after the last task.
"""

from __future__ import annotations

import argparse

import torch

from assocgan.config import make_config
from assocgan.data.benchmarks import benchmark_for
from assocgan.router import TaskRouter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="tones3")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    finals = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = make_config("quick", benchmark=args.benchmark, seed=seed, threads=1)
        bench = benchmark_for(cfg)
        router = TaskRouter(cfg, len(bench.tasks), torch.device("cpu"))
        for t, task in enumerate(bench.tasks):
            router.after_task(t, task)
            with torch.no_grad():
                acc = [float((router.route(bench.tasks[j].test_pairs()[0], t + 1) == j).float().mean()) for j in range(t + 1)]
            print(f"seed {seed} after {task.name:>12}: " + "  ".join(f"{bench.tasks[j].name} {a:4.0%}" for j, a in enumerate(acc)), flush=True)
        finals.append(acc)
    mean = [sum(f[j] for f in finals) / len(finals) for j in range(len(bench.tasks))]
    print("mean after the last task: " + "  ".join(f"{task.name} {a:.0%}" for task, a in zip(bench.tasks, mean)) + f"  all {sum(mean) / len(mean):.0%}")


if __name__ == "__main__":
    main()
