"""A run: one benchmark x one or more methods x one seed, written to one output folder as it goes."""
from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .data.benchmarks import Benchmark, load_benchmark
from .errors import UserError
from .evaluate import identity_scores, predict, summarize
from .imaging import grid, save_png
from .io import read_json, write_json, write_text
from .train import CurvePoint, TaskRecord, pick_device, train_method

RESULTS = "results.json"


def benchmark_for(cfg: RunConfig, *, data=None, clean_images=None, recipe=None, metric=None) -> Benchmark:
    return load_benchmark(
        cfg.benchmark, size=cfg.size, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed,
        data=data, clean_images=clean_images, recipe=recipe, metric=metric, order=cfg.order,
        fresh=cfg.fresh_degradations,
    )


def new_results(bench: Benchmark, cfg: RunConfig) -> dict[str, Any]:
    return {
        "benchmark": bench.name,
        "metric": bench.metric,
        "tasks": bench.task_names,
        "task_descriptions": [t.description for t in bench.tasks],
        "identity": {m: [identity_scores(t)[m] for t in bench.tasks] for m in ("psnr", "ssim")},
        "config": cfg.to_dict(),
        "methods": {},
    }


def load_results(out: Path, bench: Benchmark, cfg: RunConfig) -> dict[str, Any]:
    """The run folder's results, kept when they belong to the same benchmark, else a fresh record."""
    try:
        old = read_json(out / RESULTS)
    except ValueError as e:
        raise UserError(f"{out / RESULTS}: not valid JSON ({e}); move it away or choose another --out") from None
    fresh = new_results(bench, cfg)
    if old is None:
        return fresh
    if old.get("benchmark") != bench.name or old.get("tasks") != bench.task_names:
        raise UserError(f"{out / RESULTS}: holds a run of {old.get('benchmark')} {old.get('tasks')}; choose another --out for {bench.name} {bench.task_names}")
    old_cfg = old.get("config", {})
    differ = sorted(k for k, v in cfg.shared_settings().items() if k in old_cfg and old_cfg[k] != v)
    if differ:
        what = ", ".join(f"{k} {old_cfg[k]!r} -> {cfg.to_dict()[k]!r}" for k in differ)
        raise UserError(f"{out / RESULTS}: was made with other settings ({what}); choose another --out")
    fresh["methods"] = old.get("methods", {})
    return fresh


def method_entry(bench: Benchmark, records: list[TaskRecord], curves: list[CurvePoint]) -> dict[str, Any]:
    method = records[-1].method
    psnr = [[sc["psnr"] for sc in r.scores] + [None] * (len(bench.tasks) - len(r.scores)) for r in records]
    ssim = [[sc["ssim"] for sc in r.scores] + [None] * (len(bench.tasks) - len(r.scores)) for r in records]
    mat = psnr if bench.metric == "psnr" else ssim
    trimmed = [row[: i + 1] for i, row in enumerate(mat)]
    s = summarize(trimmed)
    return {
        "title": method.title,
        "cite": method.cite,
        "options": method.option_values(),
        "task_id_at_test": method.needs_task_id,
        "complete": len(records) == len(bench.tasks),
        "matrix": mat,
        "avg": s["avg"],
        "final_avg": s["final_avg"],
        "bwt": s["bwt"],
        "forgetting": s["forgetting"],
        "memory_bytes": int(sum(records[-1].memory.values())),
        "memory_breakdown": records[-1].memory,
        "memory_by_task": [int(sum(r.memory.values())) for r in records],
        "train_seconds": sum(r.train_seconds for r in records),
        "train_seconds_by_task": [r.train_seconds for r in records],
        "train_cpu_seconds": sum(r.cpu_seconds for r in records),
        "psnr": psnr,
        "ssim": ssim,
        "losses_by_task": [r.losses for r in records],
        "curve": [{"step": c.global_step, "task": c.t, "psnr": [s["psnr"] for s in c.scores], "ssim": [s["ssim"] for s in c.scores]} for c in curves],
    }


def write_csvs(out: Path, results: dict[str, Any], name: str) -> None:
    entry = results["methods"][name]
    for metric in ("psnr", "ssim"):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["after_task"] + results["tasks"])
        for i, row in enumerate(entry[metric]):
            w.writerow([results["tasks"][i]] + ["" if v is None else f"{v:.6f}" for v in row])
        write_text(out / "csv" / f"{name}_{metric}.csv", buf.getvalue())


def save_checkpoint(path: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    from .io import atomic_write

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p)))


def save_samples(out: Path, name: str, bench: Benchmark, rec: TaskRecord, n: int, device, tb: "TensorBoard | None" = None, step: int = 0) -> None:
    """A grid per task seen so far: inputs, outputs and targets of the first ``n`` test images; also to
    TensorBoard (``NAME/samples``, at ``step``) when ``tb`` is given."""
    rows = []
    for j in range(rec.t + 1):
        x, y = bench.tasks[j].test_pairs()
        x, y = x[:n], y[:n]
        rows.append([x, predict(rec.method.eval_generator(j), x, device=device), y])
    save_png(out / "samples" / name / f"after_task{rec.t + 1}_{bench.tasks[rec.t].name}.png", grid(rows, scale=2 if x.shape[-1] < 96 else 1))
    if tb is not None:
        tb.image(f"{name}/samples", grid(rows), step)
    for fname, pic_rows in rec.method.pictures(bench.tasks[: rec.t + 1]).items():
        save_png(out / "pictures" / name / f"{fname}.png", grid(pic_rows, scale=2 if x.shape[-1] < 96 else 1))


class TensorBoard:
    """Scalars to ``DIR/tb``; silently absent if tensorboard cannot be imported."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder))
        except Exception:  # pragma: no cover - tensorboard is a dependency
            self.writer = None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run(cfg: RunConfig, out: str | Path, bench: Benchmark | None = None, console=None, device: str | None = None, **bench_args) -> dict[str, Any]:
    """Train every method of ``cfg`` on the benchmark, writing results, CSVs, checkpoints and sample grids
    to ``out`` after each task; print the tables at the end. Returns the results record."""
    from .report.console import Progress, print_tables

    out = Path(out)
    bench = bench or benchmark_for(cfg, **bench_args)
    dev = pick_device(device)
    from .methods import get_method

    for name in cfg.methods:  # refuse a method that cannot run before training any
        get_method(name).check_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(out, bench, cfg)
    write_json(out / RESULTS, results)
    tb = TensorBoard(out / "tb")
    total = len(cfg.methods) * len(bench.tasks) * cfg.steps
    try:
        with Progress(console, total) as progress:
            for name in cfg.methods:
                curves: list[CurvePoint] = []
                records: list[TaskRecord] = []
                progress.start_method(name)

                def on_task(rec: TaskRecord, name=name, records=records, curves=curves) -> None:
                    records.append(rec)
                    results["methods"][name] = method_entry(bench, records, curves)
                    write_json(out / RESULTS, results)
                    write_csvs(out, results, name)
                    save_checkpoint(out / "checkpoints" / name / f"task{rec.t + 1}_{bench.tasks[rec.t].name}.safetensors", rec.generator)
                    save_samples(out, name, bench, rec, cfg.sample_images, dev, tb, (rec.t + 1) * cfg.steps)
                    progress.task_done(name, rec, bench)

                train_method(name, bench, cfg, device=dev, on_task=on_task, on_step=progress.advance, on_curve=curves.append, log=tb.scalar)
                if name != cfg.methods[-1]:
                    write_report_safely(out)  # a long run has a report of the methods done so far
    finally:
        tb.close()
    print_tables(results, console)
    path = write_report_safely(out)
    if path is not None and console is not None:
        console.print(f"\nReport: {path}")
    return results


def write_report_safely(out: Path) -> Path | None:
    """Plots and report.html of a run folder; a failure is reported, never raised: the results are written."""
    try:
        from .report.html import write_report

        return write_report(out)  # plots/ (forgetting curves, memory, time, ...) and report.html
    except Exception as e:
        print(f"assocgan: report.html not written ({type(e).__name__}: {e}); rebuild it with `assocgan report {out}`", file=sys.stderr)
        return None
