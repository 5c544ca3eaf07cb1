"""Evaluation: metrics on test splits, the accuracy matrix, and what is derived from it (AVG, BWT, forgetting)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from .data.tasks import Task, to_float
from .inference import predict, translate_tiled
from .metrics import DEFAULT_CONVENTION, DEFAULT_METRIC, Convention, get_metric, scores, set_scores
from .results import (
    AVG,
    BWT,
    FINAL_AVG,
    FORGETTING,
    FORGETTING_LAST,
    FWT,
    INTRANSIGENCE,
    MATRIX,
    METHODS,
    METRIC,
    PLASTICITY_GAP,
    STABILITY_GAP,
    TASK,
)


def test_size(task: Task) -> int:
    """The number of test images a task is scored on (its full-size pairs with ``--eval-full``)."""
    return len(task.full_test) if task.full_test is not None else task.test_x.shape[0]


def _mean_scores(task: Task, output: Callable[[torch.Tensor], torch.Tensor], convention: Convention, device: torch.device | None = None) -> dict[str, float]:
    """The task's score in every metric of ``output(x)`` against the targets of the task's test split (the
    training-size crops, or with ``task.full_test``, ``--eval-full``, each test pair at its own size, one at a time):
    a per-image metric's mean over the images; a set metric's (FID, KID) one value from all the outputs against
    all the targets (``set_scores``, on ``device``; the targets' features are computed once a task)."""
    sets = any(not get_metric(n).per_image for n in convention.metrics)
    if task.full_test is None:
        x, y = task.test_pairs()
        out = output(x)
        result = {k: float(v.mean()) for k, v in scores(out, y, convention).items()}
        outs, targets = out, y
    else:
        per_image, outs, targets = [], [], []
        for x, y in task.full_test:
            out, y = output(to_float(x)[None]), to_float(y)[None]
            per_image.append(scores(out, y, convention))
            if sets:  # the set metrics need every output at once: kept only for them
                outs.append(out)
                targets.append(y)
        result = {k: float(torch.cat([s[k] for s in per_image]).mean()) for k in per_image[0]}
    if sets:
        result.update(set_scores(outs, targets, convention, device))
    return {k: result[k] for k in convention.metrics}


def evaluate_task(model: nn.Module, task: Task, device: torch.device | None = None, convention: Convention = DEFAULT_CONVENTION) -> dict[str, float]:
    """The score in every metric of ``model`` on the task's test split, under the evaluation ``convention``
    (``_mean_scores``: a mean over images, or one value of the set for FID and KID). Full-size test images
    (``--eval-full``) go through the generator in overlapping tiles of the training size, blended (``assocgan
    translate --mode tile``), the way the model meets a user's image."""
    if task.full_test is None:
        return _mean_scores(task, lambda x: predict(model, x, device=device), convention, device)
    tile = task.test_x.shape[-1]
    return _mean_scores(task, lambda x: translate_tiled(model, x, tile, device), convention, device)


def evaluate_routed(
    route: Callable[[torch.Tensor], torch.Tensor],
    generator_of: Callable[[int], nn.Module],
    task: Task,
    device: torch.device | None = None,
    convention: Convention = DEFAULT_CONVENTION,
) -> tuple[dict[str, float], torch.Tensor]:
    """Mean score in every metric on the task's test split with each test image answered by the generator of the
    task ``route`` chooses for it (``route(x)``: a task index per image; ``generator_of(k)``: task k's generator),
    as ``evaluate_task`` scores one generator; and the task chosen for each test image."""
    chosen: list[torch.Tensor] = []

    def output(x: torch.Tensor) -> torch.Tensor:
        which = route(x)
        chosen.append(which)
        out = torch.empty(x.shape, dtype=torch.float32)
        for k in which.unique().tolist():
            sel = which == k
            model = generator_of(k)
            out[sel] = predict(model, x[sel], device=device) if task.full_test is None else translate_tiled(model, x[sel], task.test_x.shape[-1], device)
        return out

    return _mean_scores(task, output, convention), torch.cat(chosen)


def identity_scores(task: Task, convention: Convention = DEFAULT_CONVENTION) -> dict[str, float]:
    """The scores of doing nothing (the input as the output): the floor a model must beat."""
    return _mean_scores(task, lambda x: x, convention)


def summarize(
    matrix: list[list[float | None]],
    ahead: list[float | None] | None = None,
    initial: list[float | None] | None = None,
    metric: str = DEFAULT_METRIC,
    curve: list[dict] | None = None,
) -> dict:
    """AVG per step, final AVG, BWT, forgetting (both conventions), FWT and the stability gap of an accuracy matrix
    R[i][j] (task j after training task i) in ``metric``, whose direction decides their signs (``Metric.gain``: the
    improvement, positive when better), so that every metric reads alike:

    BWT = mean over j < T of gain(R[T-1][j], R[j][j])  (negative: earlier tasks were forgotten); for a
    higher-is-better metric R[T-1][j] - R[j][j], for a lower-is-better one R[j][j] - R[T-1][j].
    Forgetting (Chaudhry et al. 2018) = mean over j < T of gain(best_{j <= i < T-1} R[i][j], R[T-1][j]) (positive:
    forgotten), the best earlier score being the highest or the lowest by the metric's direction.
    Forgetting right after training (Avalanche) = mean over j < T of gain(R[j][j], R[T-1][j]) = -BWT.
    FWT = mean over 1 <= j < T of gain(R[j-1][j], b_j) (Lopez-Paz & Ranzato 2017; positive: training on the earlier
    tasks helped task j before it was trained), with ``ahead[j-1]`` = R[j-1][j] and ``initial[j]`` = b_j, the
    untrained generator's score on task j; None where one of them is unknown.
    Stability gap (De Lange et al. 2023) = mean over the tasks j evaluated during a later task's training of
    gain(R[j][j], worst score of task j at any evaluation after its own training): ``curve``'s ``--eval-every``
    points (each {TASK: the task in training, metric: [a score per task seen]}) and the later rows of R; None
    without such points (the end of each task alone cannot see a dip that recovers).
    """
    m = get_metric(metric)
    n = len(matrix)
    avg = [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(matrix)]
    out = {AVG: avg, FINAL_AVG: avg[-1] if avg else math.nan, BWT: None, FORGETTING: None, FORGETTING_LAST: None, FWT: None, STABILITY_GAP: None}
    if n > 1 and ahead is not None and initial is not None and len(ahead) >= n - 1 and len(initial) >= n:
        pairs = [(ahead[j - 1], initial[j]) for j in range(1, n)]
        if all(a is not None and b is not None for a, b in pairs):
            out[FWT] = sum(m.gain(a, b) for a, b in pairs) / (n - 1)
    complete = n > 0 and len(matrix[-1]) >= n and all(v is not None for v in matrix[-1][:n])
    if n > 1 and complete:
        out[BWT] = sum(m.gain(matrix[n - 1][j], matrix[j][j]) for j in range(n - 1)) / (n - 1)
        out[FORGETTING] = sum(m.gain(m.best(matrix[i][j] for i in range(j, n - 1)), matrix[n - 1][j]) for j in range(n - 1)) / (n - 1)
        out[FORGETTING_LAST] = sum(m.gain(matrix[j][j], matrix[n - 1][j]) for j in range(n - 1)) / (n - 1)
    elif n == 1:
        out[BWT] = out[FORGETTING] = out[FORGETTING_LAST] = 0.0
    out[STABILITY_GAP] = stability_gap(matrix, curve or [], m)
    return out


def stability_gap(matrix: list[list[float | None]], curve: list[dict], m) -> float | None:
    """The mean over old tasks of the deepest dip below the score each had right after its own training, over the
    evaluations during the later tasks' training (``summarize``); None where no task was evaluated during a later
    task's training."""
    later: dict[int, list[float]] = {}
    for point in curve:
        t = point[TASK]
        for j, v in enumerate(point.get(m.name) or []):
            if j < t and j < len(matrix) and v is not None:
                later.setdefault(j, []).append(v)
    if not later:
        return None
    gaps = []
    for j, values in sorted(later.items()):
        values = values + [row[j] for row in matrix[j + 1 :] if j < len(row) and row[j] is not None]
        worst = min(values, key=lambda v: m.gain(v, matrix[j][j]))
        gaps.append(max(0.0, m.gain(matrix[j][j], worst)))
    return sum(gaps) / len(gaps)


def reference_gaps(results: dict, jl: str = "jl", specialist: str = "single") -> None:
    """Each method's intransigence and plasticity gap, written into its entry of ``results`` (a results.json):
    intransigence (Chaudhry et al. 2018) = mean over k of gain(R_JL[k][k], R[k][k]), how much less the method learns
    each new task than joint learning of every task so far; plasticity gap = the same against the single-task
    specialists (``single``: one generator a task), how much less than a generator that learns that task alone.
    Positive: learns less; None where the reference did not run (or the method has no trained task)."""
    metric = get_metric(results[METRIC])
    methods = results[METHODS]
    for key, ref in ((INTRANSIGENCE, jl), (PLASTICITY_GAP, specialist)):
        base = methods.get(ref, {}).get(MATRIX) or []
        for entry in methods.values():
            mat = entry.get(MATRIX) or []
            pairs = [(base[k][k], mat[k][k]) for k in range(min(len(base), len(mat))) if base[k][k] is not None and mat[k][k] is not None]
            if pairs:
                entry[key] = sum(metric.gain(b, v) for b, v in pairs) / len(pairs)
            else:  # results.json leaves an undefined measure out
                entry.pop(key, None)
