"""Tasks made by named degradations of the built-in photos, for tests that need a task of a given kind (a
colour cast, a fade) whatever the built-in benchmarks hold."""

from __future__ import annotations

from assocgan.data.benchmarks import Benchmark, builtin_restoration_tasks

# restore4's tasks before it became four local distortions: two deterministic global colour tasks beside noise
COLOUR_TASKS = {"noise": "noise:0.1", "blur": "blur:3", "colorcast": "colorcast:1", "fade": "fade:0.3"}


def degraded_benchmark(names, size=32, n_train=32, n_test=8, seed=3, recipes=COLOUR_TASKS) -> Benchmark:
    """A PSNR benchmark of the tasks ``names`` (keys of ``recipes``), made as a built-in benchmark makes its own."""
    return Benchmark("sub", "psnr", builtin_restoration_tasks([(n, recipes[n]) for n in names], size, n_train, n_test, seed))
