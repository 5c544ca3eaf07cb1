"""Tasks made by named degradations of the built-in photos, for tests that need a task of a given kind (a
colour cast, a fade) whatever the built-in benchmarks hold."""
from __future__ import annotations

from assocgan.data import photos
from assocgan.data.benchmarks import Benchmark, restoration_tasks
from assocgan.data.degradations import parse_recipe

# restore4's tasks before it became four local distortions: two deterministic global colour tasks beside noise
COLOUR_TASKS = {"noise": "noise:0.1", "blur": "blur:3", "colorcast": "colorcast:1", "fade": "fade:0.3"}


def degraded_benchmark(names, size=32, n_train=32, n_test=8, seed=3, recipes=COLOUR_TASKS) -> Benchmark:
    """A PSNR benchmark of the tasks ``names`` (keys of ``recipes``), made as a built-in benchmark makes its own."""
    short = photos.SHORT_SIDE * size
    degs = [(n, parse_recipe(recipes[n])[0]) for n in names]
    tasks = restoration_tasks(photos.builtin_photos("train", short), photos.builtin_photos("test", short), degs, size, n_train, n_test, seed)
    return Benchmark("sub", "psnr", tasks)
