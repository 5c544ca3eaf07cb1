"""Sample grids of a run: after each task, the first test images of every task seen so far through the method,
labelled with their scores (``samples/<method>/``), and the method's own pictures (``pictures/<method>/``).

Images are labelled in the headline metric, or where that scores sets (FID, KID: no value per image) in the first
per-image metric the run scores; a run that scores set metrics only leaves them unlabelled."""

from __future__ import annotations

from dataclasses import replace

from .data.benchmarks import Benchmark
from .imaging import Picture, labelled_grid, save_png
from .inference import predict
from .methods import Method
from .metrics import Convention, get_metric, per_image_metric, scores
from .runfolder import RunFolder
from .train import TaskRecord


def caption_metric(metric: str, convention) -> str | None:
    """The metric images are labelled in: ``metric`` (the headline) if it scores images one by one, else the first
    per-image metric of the convention's, else None."""
    return per_image_metric(metric, convention.metrics)


def score_captions(pred, target, metric: str | None, convention) -> list[str] | None:
    """Each image's score against its target in ``metric`` (a per-image metric) under the run's evaluation
    convention, as printed under it; None without a metric."""
    if metric is None:
        return None
    vals = scores(pred, target, replace(convention, metrics=(metric,)))[metric]
    return [get_metric(metric).fmt(v) for v in vals]


def sample_picture(name: str, bench: Benchmark, method: Method, t: int, n: int, device, convention) -> Picture:
    """Inputs, outputs and targets of the first ``n`` test images of every task up to ``t``, a row per task; each
    input and output with its score against the target."""
    rows, caps = [], []
    metric = caption_metric(bench.metric, convention)
    for j in range(t + 1):
        x, y = bench.tasks[j].test_pairs()
        x, y = x[:n], y[:n]
        out = predict(method.eval_generator(j), x, device=device)
        rows.append([x, out, y])
        caps.append([score_captions(x, y, metric, convention), score_captions(out, y, metric, convention), None])
    m = f" ({get_metric(metric).title})" if metric is not None else ""
    return Picture(rows, [f"input{m}", f"output: {name}{m}", "target"], [f"T{j + 1} {bench.tasks[j].name}" for j in range(t + 1)], caps)


def method_picture(pic, seen, metric: str, convention) -> Picture:
    """A method's own picture (``Method.pictures``) with its words: a bare list of rows gets none but its task labels;
    a ``Picture`` whose ``compare_to`` is set gets each other image's score against that block's image."""
    if not isinstance(pic, Picture):
        return Picture(pic, [], [f"T{j + 1} {seen[j].name}" for j in range(len(pic))])
    metric = caption_metric(metric, convention)
    if pic.compare_to is not None and pic.captions is None and metric is not None:
        pic.captions = [
            [None if b == pic.compare_to else score_captions(block, row[pic.compare_to], metric, convention) for b, block in enumerate(row)] for row in pic.rows
        ]
    return pic


def save_samples(folder: RunFolder, name: str, bench: Benchmark, rec: TaskRecord, n: int, device, tb=None, step: int = 0, convention=None) -> None:
    """A labelled grid per task seen so far (``sample_picture``); also to TensorBoard (``NAME/samples``, at ``step``)
    when ``tb`` (the method's ``runner.TensorBoard``) is given; and the method's own pictures, labelled likewise."""
    convention = convention or Convention()
    pic = sample_picture(name, bench, rec.method, rec.t, n, device, convention)
    scale = 2 if pic.rows[0][0].shape[-1] < 96 else 1
    image = labelled_grid(pic, scale=scale)
    save_png(folder.sample_path(name, rec.t, bench.tasks[rec.t].name), image)
    if tb is not None:
        tb.image("samples", image, step)
    seen = bench.tasks[: rec.t + 1]
    for fname, raw in rec.method.pictures(seen).items():
        save_png(folder.picture_path(name, fname), labelled_grid(method_picture(raw, seen, bench.metric, convention), scale=scale))
