"""The groups of a perceptual study: which test images, whose outputs, written once as PNG files.

A group is one test image of one task shown through every method of the study. ``prepare`` chooses the
groups (spread evenly over the tasks, images drawn from the run's seed), loads each method's generator from
the run's checkpoints, and writes ``RUN_DIR/perceptual/images/g<id>_{input,target,<method>}.png`` and, last,
``RUN_DIR/perceptual/groups.json``. Preparing again with the same design reuses them; a different design is
refused once votes exist (they would no longer say what was shown).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from ..io import read_json, write_json
from ..results import BENCHMARK, COMPLETE, CONFIG, METHODS, TASKS
from .votecount import count_votes

FOLDER = "perceptual"
MANIFEST = "groups.json"
DEFAULT_GROUPS = 60  # the paper's 60 groups per participant


@dataclass(frozen=True)
class Group:
    id: int  # 1-based, as the page and the votes name it
    task: int  # 0-based position of the task in the run
    task_name: str
    image: int  # index into the task's test split


@dataclass
class StudyGroups:
    """What ``groups.json`` holds: the design of a study and where its images are."""

    folder: Path  # RUN_DIR/perceptual
    benchmark: str
    tasks: list[str]
    methods: list[str]
    groups: list[Group]
    show_target: bool
    seed: int
    test_counts: list[int]  # test images of each task, which the groups are drawn from

    @property
    def by_id(self) -> dict[int, Group]:
        return {g.id: g for g in self.groups}

    def design(self) -> dict[str, Any]:
        """What must not change once votes exist."""
        return {"methods": self.methods, "groups": [asdict(g) for g in self.groups], "show_target": self.show_target}

    def image_path(self, group_id: int, what: str) -> Path:
        """``what``: "input", "target" or a method name."""
        return self.folder / "images" / f"g{group_id:03d}_{what}.png"

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "tasks": self.tasks, "seed": self.seed, "test_counts": self.test_counts, **self.design()}

    @classmethod
    def from_json(cls, folder: Path, d: dict[str, Any]) -> StudyGroups:
        return cls(folder, d["benchmark"], d["tasks"], d["methods"], [Group(**g) for g in d["groups"]], d["show_target"], d["seed"], d["test_counts"])


def load_groups(run_dir: str | Path) -> StudyGroups | None:
    """The prepared study of a run folder, or None if it has none."""
    folder = Path(run_dir) / FOLDER
    try:
        d = read_json(folder / MANIFEST)
    except ValueError as e:
        raise UserError(f"{folder / MANIFEST}: not valid JSON ({e}); move {folder} away to prepare the study again") from None
    if d is None:
        return None
    try:
        return StudyGroups.from_json(folder, d)
    except (KeyError, TypeError) as e:
        raise UserError(f"{folder / MANIFEST}: not a study's groups (missing or wrong {e}); move {folder} away to prepare the study again") from None


# ---- generators ------------------------------------------------------------------------
def task_generator(run_dir: str | Path, method: str, t: int) -> nn.Module:
    """What answers for task ``t`` (0-based) at the end of the run, as the run evaluated it: the last generator,
    or, for a method evaluated with the task identity, the one for task t."""
    from .. import load_generator

    return load_generator(run_dir, method, task=t + 1)  # ``task`` is ignored by methods that answer for every task


# ---- choosing and writing the groups --------------------------------------------------------
def _results(run_dir: Path) -> dict[str, Any]:
    from ..runfolder import RunFolder

    results = RunFolder(run_dir).read_results()
    if results is None:
        raise UserError(f"{run_dir}: no results.json; give the folder of a finished `assocgan run`")
    return results


def choose_methods(results: dict[str, Any], methods: list[str] | None, where: Path) -> list[str]:
    complete = [m for m, e in results[METHODS].items() if e.get(COMPLETE)]
    if methods is None:
        methods = complete
    for m in methods:
        if m not in results[METHODS]:
            raise UserError(f"--methods: {m!r} is not in {where / 'results.json'} (it has {', '.join(results[METHODS]) or 'none'})")
        if m not in complete:
            raise UserError(f"--methods: {m} did not finish every task in {where}; finish the run or leave it out")
    if len(methods) < 2:
        raise UserError(f"--methods: a study compares at least 2 methods; {where} has {', '.join(methods) or 'none'} complete")
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods: a method is named twice in {','.join(methods)}")
    return list(methods)


def choose_groups(tasks: list[str], n_test: list[int], n: int, seed: int) -> list[Group]:
    """``n`` groups spread evenly over the tasks (the first tasks get one more when ``n`` does not divide),
    each a different test image of its task, drawn from ``seed``."""
    if n < 1:
        raise UserError(f"--groups {n}: must be at least 1")
    rng = random.Random(f"perceptual-groups:{seed}")
    out: list[Group] = []
    for t, (name, available) in enumerate(zip(tasks, n_test)):
        share = n // len(tasks) + (1 if t < n % len(tasks) else 0)
        if share > available:
            most = len(tasks) * min(n_test)
            raise UserError(f"--groups {n}: task {name} has {available} test images, fewer than its {share} groups; give --groups {most} or fewer")
        for image in sorted(rng.sample(range(available), share)):
            out.append(Group(len(out) + 1, t, name, image))
    return out


def prepare(
    run_dir: str | Path,
    *,
    groups: int | None = None,
    methods: list[str] | None = None,
    show_target: bool | None = None,
    bench_args: dict[str, Any] | None = None,
    say: Callable[[str], None] = print,
) -> StudyGroups:
    """The study of ``run_dir``: the one already prepared when it has this design (options left as None take
    its values), else made anew (images first, groups.json last). Refuses to change a design that has votes."""
    run_dir = Path(run_dir)
    results = _results(run_dir)
    old = load_groups(run_dir)
    if old is not None:
        groups = len(old.groups) if groups is None else groups
        methods = old.methods if methods is None else methods
        show_target = old.show_target if show_target is None else show_target
    methods = choose_methods(results, methods, run_dir)
    tasks, seed = results[TASKS], int(results[CONFIG].get("seed", 0))
    bench = None
    if old is None:
        bench = _benchmark(run_dir, results, bench_args or {})
    counts = old.test_counts if old is not None else [t.test_x.shape[0] for t in bench.tasks]
    chosen = choose_groups(tasks, counts, DEFAULT_GROUPS if groups is None else groups, seed)
    study = StudyGroups(run_dir / FOLDER, results[BENCHMARK], tasks, methods, chosen, bool(show_target), seed, counts)
    if old is not None and old.design() == study.design():
        if all(study.image_path(g.id, w).exists() for g in study.groups for w in ["input", "target", *methods]):
            return old
    elif old is not None and (n := count_votes(study.folder)):
        raise UserError(
            f"{study.folder}: holds {n} vote{'s' if n != 1 else ''} on another design ({len(old.groups)} groups, methods "
            f"{','.join(old.methods)}, target {'shown' if old.show_target else 'hidden'}); give the same options, or move "
            f"{study.folder} away to start a new study"
        )
    say(f"preparing {len(chosen)} groups of {len(methods)} methods in {study.folder} ...")
    if old is not None and old.design() != study.design():
        shutil.rmtree(study.folder / "images", ignore_errors=True)  # the old design's pictures
    write_images(run_dir, study, bench or _benchmark(run_dir, results, bench_args or {}))
    write_json(study.folder / MANIFEST, study.to_json())
    return study


def _benchmark(run_dir: Path, results: dict[str, Any], bench_args: dict[str, Any]):
    """The run's benchmark rebuilt from its configuration and the data it was trained on (results.json's
    ``inputs``; data options given here replace them, for data that has moved)."""
    import dataclasses

    from ..config import RunConfig
    from ..data.benchmarks import BUILTIN, benchmark_for

    given = {k: v for k, v in bench_args.items() if v}
    inputs = given or {k: v for k, v in (results.get("inputs") or {}).items() if k in ("data", "clean_images", "recipe")}
    if not inputs and results[BENCHMARK] not in BUILTIN:
        raise UserError(
            f"{run_dir} was trained on your own data ({results[BENCHMARK]}), which results.json does not locate; "
            "give its --data, or --clean-images and --recipe"
        )
    known = {f.name for f in dataclasses.fields(RunConfig)}
    bench = benchmark_for(RunConfig(**{k: v for k, v in results[CONFIG].items() if k in known}), **inputs)
    if bench.task_names != results[TASKS]:
        raise UserError(f"the data given has tasks {', '.join(bench.task_names)}, not the run's {', '.join(results[TASKS])}; give the run's own data")
    return bench


@torch.no_grad()
def write_images(run_dir: Path, study: StudyGroups, bench) -> None:
    from ..evaluate import predict
    from ..imaging import save_png, to_uint8

    for t, task in enumerate(bench.tasks):
        mine = [g for g in study.groups if g.task == t]
        if not mine:
            continue
        if task.test_x.shape[0] != study.test_counts[t]:
            raise UserError(
                f"task {task.name}: has {task.test_x.shape[0]} test images, not the {study.test_counts[t]} the study was drawn from; give the run's own data"
            )
        x, y = task.test_pairs()
        idx = torch.tensor([g.image for g in mine])
        pictures = {"input": x[idx], "target": y[idx]}
        for m in study.methods:
            pictures[m] = predict(task_generator(run_dir, m, t), x[idx])
        for what, batch in pictures.items():
            for g, im in zip(mine, to_uint8(batch)):
                save_png(study.image_path(g.id, what), im)
