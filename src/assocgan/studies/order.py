"""``order``: the same methods over several task orders; each task's final metric by its arrival position (the
paper's Figure 11b). Default orders: the cyclic rotations, so that every task arrives once at every position."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..errors import UserError, is_whole_number
from ..metrics import get_metric
from ..report.plots import METHOD_COLORS, TASK_COLORS, grid_shape, is_number, metric_name, new_figure
from ..report.tables import Table, fmt_metric, fmt_pm, spread_of, study_seeds_note
from ..results import COMPLETE, FINAL_AVG, MATRIX, SD, TASKS
from ..seeds import mean
from .base import MethodsStudy, Plot, RunSpec, default_methods, method_title, run_title, variant


def parse_orders(spec: str | None, names: list[str]) -> list[str]:
    """``"1,2,3,4;4,3,2,1"`` (positions or task names) -> canonical position lists ``["1,2,3,4", "4,3,2,1"]``.
    Each order must hold every task once. Default: the cyclic rotations of the benchmark's order."""
    n = len(names)
    if not spec:
        return [",".join(str((k + i) % n + 1) for i in range(n)) for k in range(n)]
    out = []
    for item in [s.strip() for s in spec.split(";") if s.strip()]:
        pos = []
        for tok in [t.strip() for t in item.split(",") if t.strip()]:
            if is_whole_number(tok) and 1 <= int(tok) <= n:
                pos.append(int(tok))
            elif tok in names:
                pos.append(names.index(tok) + 1)
            else:
                raise UserError(f"--orders: unknown task {tok!r} in {item!r}; tasks are {', '.join(names)} (or positions 1-{n})")
        if sorted(pos) != list(range(1, n + 1)):
            raise UserError(f"--orders: {item!r} must name each of the {n} tasks exactly once")
        key = ",".join(map(str, pos))
        if key in out:
            raise UserError(f"--orders: {item!r} is given twice")
        out.append(key)
    if not out:
        raise UserError("--orders: give at least one order")
    return out


def order_table(summary: dict) -> Table:
    """Figure 11b as a table: each task's final metric by arrival position, per method and order."""
    metric = summary["metric"]
    n = summary["n_tasks"]
    header = ["Method", "order"] + [f"{p + 1}. task" for p in range(n)] + ["final AVG"]
    rows, rules = [], set()
    for m in summary["methods"]:
        if rows:
            rules.add(len(rows))
        for run in m["runs"]:
            final = run.get("final") or []
            tasks = run.get("tasks") or []
            cells = [
                f"{tasks[p]} {fmt_pm(final[p], spread_of(run, MATRIX, -1, p), metric)}" if p < len(final) and final[p] is not None and p < len(tasks) else ""
                for p in range(n)
            ]
            rows.append([m["label"], run["order"]] + cells + [fmt_pm(run.get(FINAL_AVG), spread_of(run, FINAL_AVG), metric)])
        mean = m.get("mean_by_position") or []
        done = [r.get(FINAL_AVG) for r in m["runs"] if r.get(FINAL_AVG) is not None]
        rows.append(
            [m["label"], "mean"]
            + [fmt_metric(mean[p] if p < len(mean) else None, metric) for p in range(n)]
            + [fmt_metric(sum(done) / len(done) if done else None, metric)]
        )
    return Table(
        f"Task order: final {get_metric(metric).title} by arrival position ({summary['benchmark']})",
        header,
        rows,
        note="order: the tasks' positions in the benchmark's own order; a cell is the task that arrived at that position and its final score."
        + study_seeds_note(summary),
        rules_before=rules,
    )


def order_figure(summary: dict):
    """Figure 11b: each task's final metric by arrival position; a panel per method (first: the means)."""
    methods = summary["methods"]
    n = summary["n_tasks"]
    metric = summary["metric"]
    rows, cols = grid_shape(len(methods) + 1, 3)
    fig = new_figure(3.6 * cols, 2.8 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    pos = list(range(1, n + 1))
    ax0 = axes[0][0]
    for k, m in enumerate(methods):
        pts = [(p, v) for p, v in zip(pos, m.get("mean_by_position") or []) if is_number(v)]
        if pts:
            ax0.plot(*zip(*pts), marker="o", ms=4, lw=1.8, color=METHOD_COLORS[k % len(METHOD_COLORS)], label=m["label"])
    ax0.set_title("mean over orders", fontsize=10)
    if methods:
        ax0.legend(fontsize=7)
    order_handles = []
    for k, m in enumerate(methods):
        ax = axes[(k + 1) // cols][(k + 1) % cols]
        for o, run in enumerate(m["runs"]):
            pts = [(p, v) for p, v in zip(pos, run.get("final") or []) if is_number(v)]
            if not pts:
                continue
            (h,) = ax.plot(*zip(*pts), marker="o", ms=3, lw=1, alpha=0.75, color=TASK_COLORS[o % len(TASK_COLORS)], label="order " + run["order"])
            for (p, v), tname in zip(pts, run.get("tasks") or []):
                ax.annotate(tname, (p, v), textcoords="offset points", xytext=(3, 2), fontsize=6, color=TASK_COLORS[o % len(TASK_COLORS)])
            if k == 0:
                order_handles.append(h)
        pts = [(p, v) for p, v in zip(pos, m.get("mean_by_position") or []) if is_number(v)]
        if pts:
            ax.plot(*zip(*pts), color="black", lw=2.4, label="mean")
        ax.set_title(m["label"], fontsize=10)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        if k > len(methods):
            ax.set_visible(False)
            continue
        ax.set_xticks(pos)
        ax.set_xticklabels([f"{p}." for p in pos])
        ax.set_xlim(0.6, n + 0.6)
        ax.grid(alpha=0.25)
        if k % cols == 0:
            ax.set_ylabel(f"final {metric_name(metric)}")
        if k // cols == rows - 1 or k + cols > len(methods):
            ax.set_xlabel("arrival position")
    if order_handles:
        fig.legend(handles=order_handles, loc="outside lower center", ncols=min(len(order_handles), 4), fontsize=7, frameon=False)
    fig.suptitle(f"Task order: {summary['benchmark']}", fontsize=11)
    return fig


class OrderStudy(MethodsStudy):
    name = "order"
    help = "the same methods over several task orders: final metric by arrival position (Fig. 11b)"
    description = (
        "The same methods trained on several task orders: each task's final metric by the position at which it arrived (the paper's Figure 11b / 12b). "
        "With the default cyclic rotations every task arrives once at every position, so position effects are not confounded with task difficulty."
    )
    plots = (
        Plot(
            "order",
            "Order study (paper Fig. 11b/12b): each task's final metric by its arrival position; one line per task order, bold: mean over orders.",
            order_figure,
        ),
    )

    def add_arguments(self, group) -> None:
        group.add_argument(
            "--orders", help='task orders separated by ";", each a permutation of positions or names, e.g. "1,2,3,4;4,3,2,1" (default: the cyclic rotations)'
        )

    def options(self, args, cfg: RunConfig) -> dict[str, Any]:
        return {**super().options(args, cfg), "orders": args.orders}

    def runs(self, base: RunConfig, names: list[str], methods: list[str] | None = None, orders: str | None = None) -> tuple[list[RunSpec], dict[str, Any]]:
        if base.order:
            raise UserError("study order: give the task orders with --orders, not --order")
        methods = methods or default_methods()
        keys = parse_orders(orders, names)
        runs = [
            RunSpec(
                f"{m}_order{o.replace(',', '-')}",
                f"{method_title(m)}, order {o}",
                variant(base, [m], order=o),
                how=f"{m} --order {o}",
                meta={"method": m, "order": o},
            )
            for m in methods
            for o in keys
        ]
        return runs, {"methods": methods, "orders": keys}

    def collect(self, study: dict, found: dict, tasks: list[str]) -> dict[str, Any]:
        by_method: dict[str, dict] = {}
        for spec in study["runs"]:
            results, e = found[spec["name"]]
            m = by_method.setdefault(spec["method"], {"name": spec["method"], "label": spec["method"], "runs": []})
            if e:
                m["label"] = run_title(spec, e)
            order = [int(p) for p in spec["order"].split(",")]
            complete = bool(e and e.get(COMPLETE))
            m["runs"].append(
                {
                    "order": spec["order"],
                    "tasks": results[TASKS] if results else [tasks[p - 1] for p in order if p - 1 < len(tasks)],
                    "final": e[MATRIX][-1] if complete else None,
                    FINAL_AVG: e.get(FINAL_AVG) if complete else None,
                    COMPLETE: complete,
                    SD: e.get(SD) if complete else None,
                }
            )
        for m in by_method.values():
            finals = [r["final"] for r in m["runs"] if r["final"]]
            m["mean_by_position"] = [mean(f[p] for f in finals) for p in range(len(tasks))] if finals else []
        return {"methods": list(by_method.values())}

    def tables(self, summary: dict) -> list[Table]:
        return [order_table(summary)]
