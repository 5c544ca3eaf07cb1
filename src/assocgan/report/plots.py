"""The paper's figures as PNG files (with PDF and SVG copies beside them), made from a run's ``results.json`` alone,
and the drawing helpers the study kinds (``assocgan.studies``) draw their figures with.

Run plots (``DIR/plots/``): forgetting curves (Figure 6 layout), memory against the number of tasks
(Figure 5a), training time (Figure 5b), final metric against training time (Figure 9a) and the average
metric after each task (Figure 11a).

Matplotlib is used through ``Figure`` and the Agg canvas only (no pyplot): nothing global changes, and
files are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import write_bytes
from ..metrics import get_metric
from ..results import (
    AVG,
    BENCHMARK,
    COMPLETE,
    CONFIG,
    CURVE,
    FINAL_AVG,
    MATRIX,
    MEMORY_BY_TASK,
    MEMORY_BYTES,
    METHODS,
    METRIC,
    SD,
    STEP,
    TASKS,
    TRAIN_SECONDS,
    TRAIN_SECONDS_BY_TASK,
    scored_metrics,
)
from ..runfolder import RunFolder
from .tables import fmt_bytes, method_label

# the paper's task colours: blue, red, yellow, green; then the rest of a qualitative palette
TASK_COLORS = ["#1f77b4", "#d62728", "#e6b800", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
METHOD_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]
# what each run plot shows, by file stem: used as captions in report.html
CAPTIONS = {
    "forgetting": "Forgetting curves (paper Fig. 6/10): each task's test metric over the whole training sequence, one panel per method, one line per task. Dotted lines: task boundaries. Over several seeds: the mean, with a band of one sd either side.",
    "avg_by_task": "Average metric over the tasks seen so far, after each task (paper Fig. 11a layout).",
    "memory": "Memory kept between tasks against the number of tasks learned (paper Fig. 5a/8), log scale.",
    "time": "Training time per method, split by task (paper Fig. 5b/9).",
    "time_vs_metric": "Final average metric against total training time (paper Fig. 9a).",
}


def new_figure(w: float, h: float):
    """A Matplotlib figure of ``w`` x ``h`` inches, laid out by constraint (no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    return fig


# beside each PNG (for the HTML report), the same figure as vectors for a paper; no dates, so a rebuilt
# report's files change only when its numbers do
VECTOR_FORMATS = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and as PDF and SVG beside it (same stem), each atomically; returns the PNG's path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path = Path(path)
    for fmt, metadata in {"png": None, **VECTOR_FORMATS}.items():
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata=metadata)
        written = write_bytes(path.with_suffix(f".{fmt}"), buf.getvalue())
        if fmt == "png":
            png = written
    return png


def metric_name(metric: str) -> str:
    """The label of ``metric`` on an axis."""
    return get_metric(metric).label


def is_number(v: Any) -> bool:
    """Whether ``v`` is a value to draw (not missing, not NaN)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _task_ticks(ax, tasks: list[str]) -> None:
    ax.set_xticks(range(1, len(tasks) + 1))
    ax.set_xticklabels([f"T{i + 1}\n{t}" for i, t in enumerate(tasks)], fontsize=8)


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels, at most ``max_cols`` wide."""
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


# ---- run plots --------------------------------------------------------------------------
def task_series(results: dict, name: str, metric: str | None = None, spread: bool = False) -> list[tuple[list[float], ...]]:
    """For each task j, the (steps, values) of its metric over training: the ``curve`` points (``--eval-every``)
    and the evaluation after each task (at the task's last step). Without a step count, x is the task index.
    ``spread``: (steps, values, sd over seeds) instead, the sd None where the run has one seed."""
    metric = metric or results[METRIC]
    res = results[METHODS][name]
    own = metric == results[METRIC]
    mat = res[MATRIX] if own else res[metric]
    mat_sd = (res.get(SD) or {}).get(MATRIX if own else metric) or []
    steps = (results.get(CONFIG) or {}).get("steps") or 1

    def at(rows, i, j):
        return rows[i][j] if i < len(rows) and isinstance(rows[i], list) and j < len(rows[i]) else None

    out = []
    for j in range(len(results[TASKS])):
        pts: dict[float, tuple[float, float | None]] = {}
        for c in res.get(CURVE) or []:
            vals = c.get(metric) or []
            sds = ((c.get(SD) or {}).get(metric)) or []
            if j < len(vals) and is_number(vals[j]):
                pts[float(c[STEP])] = (vals[j], sds[j] if j < len(sds) else None)
        for i, row in enumerate(mat):
            if j <= i and j < len(row) and is_number(row[j]):
                pts[float((i + 1) * steps)] = (row[j], at(mat_sd, i, j))  # after the task's last step (and after_task)
        xs = sorted(pts)
        ys = [pts[x][0] for x in xs]
        out.append((xs, ys, [pts[x][1] for x in xs]) if spread else (xs, ys))
    return out


def forgetting_figure(results: dict, metric: str | None = None):
    """Figure 6: one panel per method, one line per task, the metric (by default the benchmark's) over the whole
    sequence."""
    names = list(results[METHODS])
    tasks = results[TASKS]
    metric = metric or results[METRIC]
    steps = (results.get(CONFIG) or {}).get("steps") or 1
    rows, cols = grid_shape(len(names))
    fig = new_figure(3.3 * cols, 2.6 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    handles: dict[int, Any] = {}
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        res = results[METHODS][name]
        has_curve = bool(res.get(CURVE))
        for j, (xs, ys, sds) in enumerate(task_series(results, name, metric, spread=True)):
            if not xs:
                continue
            color = TASK_COLORS[j % len(TASK_COLORS)]
            (h,) = ax.plot(xs, ys, color=color, lw=1.5, marker=None if has_curve else "o", ms=4, label=f"T{j + 1} {tasks[j]}")
            if any(is_number(d) for d in sds):  # several seeds: a band of one sd either side of the mean
                band = [d if is_number(d) else 0.0 for d in sds]
                ax.fill_between(xs, [y - d for y, d in zip(ys, band)], [y + d for y, d in zip(ys, band)], color=color, alpha=0.18, lw=0)
            handles.setdefault(j, h)
        for i in range(1, len(tasks)):
            ax.axvline(i * steps, color="#999", ls=":", lw=0.8)
        total = len(tasks) * steps
        ax.set_xlim(-0.03 * total, 1.03 * total)  # the markers at the first and the last step whole, inside the axes
        ax.set_title(method_label(name, res), fontsize=10)
        ax.grid(alpha=0.25)
        if k % cols == 0:
            ax.set_ylabel(metric_name(metric))
        if k // cols == rows - 1:
            ax.set_xlabel("training step")
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if handles:
        fig.legend(handles=[handles[j] for j in sorted(handles)], loc="outside lower center", ncols=min(len(handles), 5), fontsize=8, frameon=False)
    own = metric == results[METRIC]
    fig.suptitle(f"Forgetting curves: {results[BENCHMARK]}" + ("" if own else f" ({get_metric(metric).title})"), fontsize=11)
    return fig


def avg_figure(series: list[dict], tasks: list[str], metric: str, title: str):
    """Figure 11a: the average metric over the tasks seen so far after each task, one line per entry of
    ``series`` ({"label", "avg": [...]})."""
    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    for k, s in enumerate(series):
        pts = [(i + 1, v) for i, v in enumerate(s.get("avg") or []) if is_number(v)]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=4, lw=1.6, color=METHOD_COLORS[k % len(METHOD_COLORS)], label=s["label"])
    _task_ticks(ax, tasks)
    ax.set_xlim(0.7, len(tasks) + 0.3)
    ax.set_xlabel("after training task")
    ax.set_ylabel(f"average {metric_name(metric)} over tasks seen")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return fig


def memory_figure(results: dict):
    """Figure 5a: bytes kept between tasks against the number of tasks learned, log scale."""
    fig = new_figure(8.6, 4.0)
    ax = fig.subplots()
    tasks = results[TASKS]
    zero = []
    drawn = False
    for k, (name, res) in enumerate(results[METHODS].items()):
        mem = res.get(MEMORY_BY_TASK) or []
        pts = [(i + 1, v) for i, v in enumerate(mem) if is_number(v) and v > 0]
        label = method_label(name, res)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=4, lw=1.6, color=METHOD_COLORS[k % len(METHOD_COLORS)], label=f"{label}: {fmt_bytes(res.get(MEMORY_BYTES))}")
            drawn = True
        elif mem:
            zero.append(label)
    if drawn:
        ax.set_yscale("log")
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_bytes(v)))
        # between the decades, label only 2x and 5x: enough to read a value, too few to overlap
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: fmt_bytes(v) if f"{v:.0e}"[0] in "25" else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if zero:
        x, y = (1.01, 0.0) if drawn else (0.01, 0.01)  # beside the legend, off the lines
        ax.text(x, y, "keep nothing (0 B): " + ", ".join(zero), transform=ax.transAxes, fontsize=8, va="bottom", color="#555")
    _task_ticks(ax, tasks)
    ax.set_xlim(0.7, len(tasks) + 0.3)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("memory kept between tasks")
    ax.set_title(f"Memory: {results[BENCHMARK]}", fontsize=11)
    ax.grid(alpha=0.25, which="both")
    return fig


def time_figure(results: dict):
    """Figure 5b: training seconds per method, stacked by task."""
    names = list(results[METHODS])
    tasks = results[TASKS]
    fig = new_figure(6.4, 1.4 + 0.45 * max(2, len(names)))
    ax = fig.subplots()
    for k, name in enumerate(names):
        res = results[METHODS][name]
        left = 0.0
        for j, sec in enumerate(res.get(TRAIN_SECONDS_BY_TASK) or []):
            ax.barh(k, sec, left=left, color=TASK_COLORS[j % len(TASK_COLORS)], edgecolor="white", label=f"T{j + 1} {tasks[j]}" if k == 0 else None)
            left += sec
        ax.text(left, k, f" {res.get(TRAIN_SECONDS, left):.0f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([method_label(n, results[METHODS][n]) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_title(f"Training time: {results[BENCHMARK]}", fontsize=11)
    ax.margins(x=0.15)
    ax.grid(alpha=0.25, axis="x")
    if names:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(5, len(tasks)), fontsize=7, frameon=False)
    return fig


def time_vs_metric_figure(results: dict):
    """Figure 9a: final average metric against total training time, one point per method."""
    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    for k, (name, res) in enumerate(results[METHODS].items()):
        if not is_number(res.get(FINAL_AVG)):
            continue
        ax.scatter([res.get(TRAIN_SECONDS, 0)], [res[FINAL_AVG]], color=METHOD_COLORS[k % len(METHOD_COLORS)], s=36, zorder=3)
        ax.annotate(
            method_label(name, res) + ("" if res.get(COMPLETE) else " (partial)"),
            (res.get(TRAIN_SECONDS, 0), res[FINAL_AVG]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("training seconds")
    ax.set_ylabel(f"final average {metric_name(results[METRIC])}")
    ax.set_title(f"Time and performance: {results[BENCHMARK]}", fontsize=11)
    ax.margins(0.2)
    ax.grid(alpha=0.25)
    return fig


def other_metrics(results: dict) -> list[str]:
    """The metrics the run scored besides the benchmark's: each has its own forgetting curves (``forgetting_<metric>``)."""
    return [m for m in scored_metrics(results) if m != results[METRIC]]


def run_captions(results: dict) -> dict[str, str]:
    """The caption of each run plot by file stem (``CAPTIONS``, and the forgetting curves in each other metric)."""
    return {
        "forgetting": CAPTIONS["forgetting"],
        **{f"forgetting_{m}": f"Forgetting curves in {get_metric(m).title}, as above." for m in other_metrics(results)},
        **CAPTIONS,
    }


def run_figures(results: dict) -> dict[str, Callable[[], Any]]:
    series = [{"label": method_label(n, r), "avg": r.get(AVG)} for n, r in results[METHODS].items()]
    return {
        "forgetting": lambda: forgetting_figure(results),
        **{f"forgetting_{m}": (lambda m=m: forgetting_figure(results, m)) for m in other_metrics(results)},
        "avg_by_task": lambda: avg_figure(series, results[TASKS], results[METRIC], f"Average after each task: {results[BENCHMARK]}"),
        "memory": lambda: memory_figure(results),
        "time": lambda: time_figure(results),
        "time_vs_metric": lambda: time_vs_metric_figure(results),
    }


def write_plots(folder: str | Path) -> list[Path]:
    """(Re)write the plots of a run folder (from results.json) into ``folder/plots/``; returns the PNGs written
    (each has its PDF and SVG beside it)."""
    folder = Path(folder)
    results = RunFolder(folder).read_results()
    if results is None or not results.get(METHODS):
        return []
    written = []
    for stem, make in run_figures(results).items():
        written.append(save_figure(make(), folder / "plots" / f"{stem}.png"))
    return written
