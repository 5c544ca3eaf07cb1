"""Benchmarks: ordered lists of tasks, built in or made from a user's folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UserError, is_whole_number
from ..metrics import DEFAULT_METRIC, METRICS
from . import folders, photos, tones
from .degradations import Degradation, parse_recipe, to_uint8
from .tasks import Task, to_float

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig


@dataclass
class Benchmark:
    name: str
    metric: str  # a name in metrics.METRICS: the metric of the accuracy matrix
    tasks: list[Task]
    description: str = ""
    left_out: tuple[str, ...] = ()  # tasks an --order that names only some of them leaves out

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


@dataclass(frozen=True)
class BuiltinSpec:
    description: str
    metric: str
    tasks: tuple[tuple[str, str], ...]  # (task name, recipe or filter chain)
    kind: str  # "restore" or "tones"


BUILTIN: dict[str, BuiltinSpec] = {
    "restore4": BuiltinSpec(
        "Photo restoration, 4 local distortions whose best mappings conflict (the paper's DFD split)",
        "psnr",
        (("noise", "noise:0.1"), ("impulse", "impulse:0.1"), ("oversharpen", "oversharpen:2"), ("blur", "blur:2")),
        "restore",
    ),
    "mixed4": BuiltinSpec(
        "Photo restoration mixing local and global corrections: noise, blur, a colour cast and a faded print",
        "psnr",
        (("noise", "noise:0.1"), ("blur", "blur:3"), ("colorcast", "colorcast:1"), ("fade", "fade:0.3")),
        "restore",
    ),
    "tones3": BuiltinSpec(
        "Chained style transfer: photo -> sketch -> blueprint -> cartoon (the paper's GLD experiment)",
        "ssim",
        (("sketch", "sketch"), ("blueprint", "blueprint"), ("cartoon", "cartoon")),
        "tones",
    ),
}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def restoration_tasks(
    train_photos, test_photos, degradations: list[tuple[str, Degradation]], size, n_train, n_test, seed, fresh: bool = False, full_test: bool = False
) -> list[Task]:
    """One task per degradation, each with its own multi-scale crops of the photos: ``n_train`` training and
    ``n_test`` test pairs, each clean crop degraded once from the seed (fixed pairs, as a dataset holds them;
    ``fresh`` draws training sources anew at every step instead). ``full_test`` adds each whole test photo,
    degraded once, as a full-size test pair (``--eval-full``)."""
    tasks = []
    for k, (name, deg) in enumerate(degradations):
        rng = np.random.default_rng([seed, k])
        train_y = _t(photos.random_crops(train_photos, n_train, size, rng))
        test_y = _t(photos.random_crops(test_photos, n_test, size, rng))
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        train_x = to_uint8(deg(to_float(train_y), gen))
        test_x = to_uint8(deg(to_float(test_y), gen))
        full = None
        if full_test:
            clean = [_chw(p) for p in test_photos]
            full = [(to_uint8(deg(to_float(y[None]), gen))[0], y) for y in clean]
        tasks.append(Task(name, train_x, train_y, test_x, test_y, degrade=deg, fresh=fresh, description=deg.name, full_test=full))
    return tasks


def builtin_restoration_tasks(named_recipes, size, n_train, n_test, seed, fresh: bool = False) -> list[Task]:
    """Restoration tasks on the built-in photos: one per (task name, recipe) pair, made as ``restore4`` makes its own."""
    degs = [(name, parse_recipe(r)[0]) for name, r in named_recipes]
    short = photos.SHORT_SIDE * size
    return restoration_tasks(photos.builtin_photos("train", short), photos.builtin_photos("test", short), degs, size, n_train, n_test, seed, fresh)


def _tone_chain(imgs: list[np.ndarray], names) -> list[list[np.ndarray]]:
    versions = [imgs]
    for n in names:
        versions.append([tones.FILTERS[n](im) for im in versions[-1]])
    return versions


def tone_tasks(spec: BuiltinSpec, size, n_train, n_test, seed) -> list[Task]:
    names = [f for _, f in spec.tasks]
    short = photos.SHORT_SIDE * size
    train_v = _tone_chain(photos.builtin_photos("train", short), names)
    test_v = _tone_chain(photos.builtin_photos("test", short), names)
    tasks = []
    for k, (name, _) in enumerate(spec.tasks):
        rng = np.random.default_rng([seed, k])
        tx, ty = photos.aligned_crops([train_v[k], train_v[k + 1]], n_train, size, rng)
        vx, vy = photos.aligned_crops([test_v[k], test_v[k + 1]], n_test, size, rng)
        src = "photo" if k == 0 else spec.tasks[k - 1][0]
        tasks.append(Task(name, _t(tx), _t(ty), _t(vx), _t(vy), description=f"{src} -> {name}"))
    return tasks


def _chw(img: np.ndarray) -> torch.Tensor:
    return _t(img.transpose(2, 0, 1))


def _full_size(file: Path, img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if min(h, w) < size:
        raise UserError(f"--eval-full: {file} is {w}x{h}, smaller than --size {size} on a side; leave --eval-full out or give a smaller --size")
    return img


def folder_tasks(root: Path, size: int, full_test: bool = False) -> list[Task]:
    tasks = []
    for d in folders.task_folders(root):
        tx, ty = folders.load_split(d / "train", size)
        native = folders.native_pairs(d / "test")
        vx, vy = folders.fit_pairs(native, size)
        full = [(_chw(_full_size(f, a, size)), _chw(b)) for f, a, b in native] if full_test else None
        tasks.append(Task(d.name, _t(tx), _t(ty), _t(vx), _t(vy), description=str(d), full_test=full))
    return tasks


def apply_order(tasks: list[Task], order: str | None) -> list[Task]:
    """Reorder tasks by a comma-separated list of task names or 1-based positions."""
    if not order:
        return tasks
    by_name = {t.name: t for t in tasks}
    out = []
    for item in [s.strip() for s in order.split(",")]:
        if is_whole_number(item) and 1 <= int(item) <= len(tasks):
            out.append(tasks[int(item) - 1])
        elif item in by_name:
            out.append(by_name[item])
        else:
            raise UserError(f"--order: unknown task {item!r}; tasks are {', '.join(by_name)} (or positions 1-{len(tasks)})")
    if len({id(t) for t in out}) != len(out):
        raise UserError(f"--order {order!r}: a task is named twice")
    return out


def builtin_photos_note(name: str | None, size: int, n_train: int, n_test: int, *, data=None, clean_images=None, **_) -> str | None:
    """A warning when a built-in benchmark asks for more crops than its photos hold without overlap (the
    ``paper`` preset's 2000 crops of 224 px, say): its models would see few distinct images. None otherwise."""
    if data is not None or clean_images is not None or name not in BUILTIN:
        return None
    splits = {s: photos.photo_sizes(s) for s in ("train", "test")}
    smallest = min(min(hw) for sizes in splits.values() for hw in sizes)
    if size > smallest:
        raise UserError(
            f"--size {size}: larger than the built-in photos ({smallest} px on the shorter side), whose crops {name} takes; "
            f"give at most {smallest - smallest % 16}, or your own photos (--clean-images DIR --recipe RECIPE)"
        )
    room = {s: photos.disjoint_crops(sizes, size) for s, sizes in splits.items()}
    if n_train <= room["train"] and n_test <= room["test"]:
        return None
    shorts = sorted({min(hw) for sizes in splits.values() for hw in sizes})
    short = f"{shorts[0]}" if len(shorts) == 1 else f"{shorts[0]}-{shorts[-1]}"
    return (
        f"{name} cuts its {n_train} training crops of {size} px per task from {len(splits['train'])} built-in photos and its {n_test} test "
        f"crops from {len(splits['test'])} ({short} px on the shorter side), which hold about {room['train']} and "
        f"{room['test']} crops of that size without overlap, so the crops overlap and the models see few distinct images. At this scale use your own "
        "photos (--clean-images DIR --recipe RECIPE) or paired folders (--data ROOT); see 'The paper's scale' in the README"
    )


def load_benchmark(
    name: str | None = "restore4",
    *,
    size: int = 64,
    n_train: int = 512,
    n_test: int = 32,
    seed: int = 0,
    data: str | Path | None = None,
    clean_images: str | Path | None = None,
    recipe: str | None = None,
    metric: str | None = None,
    order: str | None = None,
    fresh: bool = False,
    full_test: bool = False,
) -> Benchmark:
    """Build a benchmark: a built-in one by name, a user's paired folders (``data``), or a clean-image
    folder plus a degradation recipe (``clean_images`` + ``recipe``). Pairs are fixed; ``fresh`` draws the training
    sources of degradation tasks anew at every step (``--fresh-degradations``); ``full_test`` evaluates a user's
    data on its test images at their own size (``--eval-full``)."""
    if size % 16 or size < 16:
        raise UserError(f"--size {size}: must be a positive multiple of 16")
    if metric is not None and metric not in METRICS:
        raise UserError(f"--metric {metric!r}: choose {' or '.join(METRICS)}")
    if data is not None and clean_images is not None:
        raise UserError("--data and --clean-images: give one of them (paired task folders, or clean images with a --recipe)")
    if fresh and (data is not None or (clean_images is None and name in BUILTIN and BUILTIN[name].kind != "restore")):
        raise UserError("--fresh-degradations: only for tasks made by a degradation (restore4 or --clean-images with --recipe)")
    if full_test and data is None and clean_images is None:
        raise UserError("--eval-full: only for your own data (--data or --clean-images); a built-in benchmark tests on crops of --size")
    if data is not None:
        root = Path(data)
        tasks = folder_tasks(root, size, full_test)
        bench = Benchmark(root.name, metric or DEFAULT_METRIC, tasks, f"paired folders under {root}")
    elif clean_images is not None:
        if not recipe:
            raise UserError("--clean-images needs --recipe (e.g. blur:3,noise:0.2,jpeg:10)")
        degs = parse_recipe(recipe)
        imgs = [photos.shrink(im, photos.SHORT_SIDE * size) for im in folders.clean_images(Path(clean_images), size)]
        n_test_imgs = max(1, len(imgs) // 5)
        train_imgs, test_imgs = imgs[:-n_test_imgs], imgs[-n_test_imgs:]
        tasks = restoration_tasks(train_imgs, test_imgs, [(d.name, d) for d in degs], size, n_train, n_test, seed, fresh, full_test)
        bench = Benchmark(Path(clean_images).name, metric or DEFAULT_METRIC, tasks, f"{clean_images} with recipe {recipe}")
    else:
        if recipe is not None:
            raise UserError("--recipe goes with --clean-images")
        if name not in BUILTIN:
            raise UserError(f"--benchmark {name!r}: unknown; built-in benchmarks are {', '.join(BUILTIN)} (or use --data / --clean-images)")
        spec = BUILTIN[name]
        if spec.kind == "restore":
            tasks = builtin_restoration_tasks(spec.tasks, size, n_train, n_test, seed, fresh)
        else:
            tasks = tone_tasks(spec, size, n_train, n_test, seed)
        bench = Benchmark(name, metric or spec.metric, tasks, spec.description)
    ordered = apply_order(bench.tasks, order)
    bench.left_out = tuple(t.name for t in bench.tasks if all(t is not o for o in ordered))
    bench.tasks = ordered
    return bench


def benchmark_for(cfg: RunConfig, *, data=None, clean_images=None, recipe=None, metric=None) -> Benchmark:
    """The benchmark of the run configuration ``cfg`` (its benchmark, sizes, seed, task order, fresh degradations and
    full-size test), on the data given (``--data``, or ``--clean-images`` with ``--recipe``)."""
    return load_benchmark(
        cfg.benchmark,
        size=cfg.size,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        seed=cfg.seed,
        data=data,
        clean_images=clean_images,
        recipe=recipe,
        metric=metric,
        order=cfg.order,
        fresh=cfg.fresh_degradations,
        full_test=cfg.eval_full,
    )
