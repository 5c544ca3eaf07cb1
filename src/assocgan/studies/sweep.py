"""``lambda``: a sweep of one numeric option of one method (default: Assoc-GAN's ``lambda_distill``); the prior
tasks' and all tasks' final metric for each value (the paper's Figure 14)."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..errors import UserError
from ..metrics import get_metric
from ..report.plots import TASK_COLORS, is_number, metric_name, new_figure
from ..report.tables import Table, fmt_metric, fmt_pm, spread_of, study_seeds_note
from ..results import BWT, COMPLETE, FINAL_AVG, MATRIX, SD
from ..seeds import mean
from .base import Plot, RunSpec, StudyKind, below_doing_nothing, safe_name, variant

DEFAULT_SWEEP = ("assoc", "lambda_distill")


def sweep_values(method: str, option: str, values: str | list | None) -> list[Any]:
    """The swept values, parsed by the option itself. Default: 0 and the option's default times 0.1, 0.3, 1, 3, 10."""
    from ..methods import get_method

    cls = get_method(method)
    opt = next((o for o in cls.options if o.name == option), None)
    if opt is None:
        names = ", ".join(o.name for o in cls.options) or "none"
        raise UserError(f"--option {option!r}: method {method} has no such option (its options: {names})")
    if isinstance(opt.default, bool) or not isinstance(opt.default, (int, float)):
        raise UserError(f"--option {option!r}: a sweep needs a numeric option; its default is {opt.default!r}")
    if values is None:
        d = opt.default
        raw = [0, 0.1 * d, 0.3 * d, d, 3 * d, 10 * d] if d else [0, 0.1, 1, 10]
        vals = [opt.parse(str(type(d)(v))) for v in raw]
    else:
        items = values.split(",") if isinstance(values, str) else list(values)
        vals = [opt.parse(str(v).strip()) for v in items if str(v).strip()]
    out = []
    for v in vals:
        if v not in out:
            out.append(v)
    if not out:
        raise UserError("--values: give at least one value")
    return sorted(out)


def lambda_runs(base: RunConfig, method: str, option: str, values: list[Any]) -> list[RunSpec]:
    """A run a value, with the options the swept one acts only with switched on."""
    from ..methods import get_method

    flag = "--" + option.replace("_", "-")
    cls = get_method(method)
    needs = cls.needs(option)  # what the option acts only with (Assoc-GAN's lambda': --distill on)
    spelled = {o.name: o for o in cls.options}
    also = "".join(f" {spelled[k].flag} {spelled[k].shown(v)}" for k, v in needs.items())
    return [
        RunSpec(
            safe_name(f"{method}_{option}={v:g}"),
            f"{flag} {v:g}",
            variant(base, [method], {method: {**needs, option: v}}),
            how=f"{method}{also} {flag} {v:g}",
            meta={"method": method, "value": v},
        )
        for v in values
    ]


def lambda_table(summary: dict) -> Table:
    """Figure 14 as a table: the prior tasks' and all tasks' final metric for each swept value."""
    metric = summary["metric"]
    prior = summary["prior_tasks"]
    flag = summary.get("flag") or summary.get("option", "value")
    header = [flag] + [f"T{j + 1}" for j in range(len(prior))] + ["prior mean", f"T{len(prior) + 1} last", "overall AVG", "BWT", "below input"]
    rows = []
    for r in summary["rows"]:
        final = r.get("final") or []
        rows.append(
            [f"{r['value']:g}" + ("" if r.get(COMPLETE) else " (partial)")]
            + [fmt_pm(final[j] if j < len(final) else None, spread_of(r, MATRIX, -1, j), metric) for j in range(len(prior))]
            + [
                fmt_metric(r.get("prior_mean"), metric),
                fmt_pm(r.get("last"), spread_of(r, MATRIX, -1, len(final) - 1), metric),
                fmt_pm(r.get("overall"), spread_of(r, FINAL_AVG), metric),
                fmt_pm(r.get(BWT), spread_of(r, BWT), metric, signed=True),
                r.get("below", ""),
            ]
        )
    tasks = summary.get("tasks") or prior
    names = ", ".join(f"T{j + 1} {t}" for j, t in enumerate(tasks))
    return Table(
        f"Sweep of {summary.get('method', '')} {flag}: final {get_metric(metric).title} ({summary['benchmark']})",
        header,
        rows,
        note=f"Tasks: {names}. Prior mean: mean over the tasks before the last (the paper's Fig. 14a); overall AVG: all tasks (Fig. 14b). "
        "below input: the tasks on which the value ends below doing nothing (over the seeds' mean)." + study_seeds_note(summary),
    )


def lambda_figure(summary: dict):
    """Figure 14: (a) each prior task's final metric and their mean, (b) the overall final average,
    against the swept value."""
    from matplotlib.ticker import NullLocator

    rows = summary["rows"]
    metric = summary["metric"]
    fig = new_figure(10.0, 3.9)
    ax_a, ax_b = fig.subplots(1, 2)
    xs = [r["value"] for r in rows]
    for j, tname in enumerate(summary["prior_tasks"]):
        pts = [(r["value"], r["final"][j]) for r in rows if r.get("final") and j < len(r["final"]) and is_number(r["final"][j])]
        if pts:
            ax_a.plot(*zip(*pts), marker="o", ms=4, lw=1.2, color=TASK_COLORS[j % len(TASK_COLORS)], label=f"T{j + 1} {tname}")
    pts = [(r["value"], r["prior_mean"]) for r in rows if is_number(r.get("prior_mean"))]
    if pts:
        ax_a.plot(*zip(*pts), marker="s", ms=5, lw=2.2, color="black", label="mean of prior tasks")
    pts = [(r["value"], r["overall"]) for r in rows if is_number(r.get("overall"))]
    if pts:
        ax_b.plot(*zip(*pts), marker="o", ms=5, lw=2, color="#d62728", label="all tasks")
        best = get_metric(metric).best(pts, key=lambda p: p[1])
        ax_b.annotate(f"best: {best[0]:g}", best, textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    label = summary.get("flag") or summary.get("option", "value")
    for ax, title in ((ax_a, "(a) prior tasks"), (ax_b, "(b) overall")):
        positive = [x for x in xs if x > 0]
        if positive and max(xs) / min(positive) >= 20:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.margins(y=0.15)
        ax.set_xlabel(f"{summary.get('method', '')} {label}")
        ax.set_ylabel(f"final {metric_name(metric)}")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7)
    fig.suptitle(f"Sweep of {label}: {summary['benchmark']}", fontsize=11)
    return fig


class SweepStudy(StudyKind):
    name = "lambda"
    help = "sweep of a method option, by default Assoc-GAN's --lambda-distill (Fig. 14)"
    description = "A sweep of the continual-distillation weight lambda': the prior tasks' final metric and the overall final average for each value (the paper's Figure 14)."
    plots = (
        Plot(
            "lambda",
            "Lambda' sweep (paper Fig. 14): (a) the prior tasks' final metric, (b) the overall final average, against the distillation weight.",
            lambda_figure,
        ),
    )

    def add_arguments(self, group) -> None:
        group.add_argument("--method", default=None, help=f"the method whose option is swept (default {DEFAULT_SWEEP[0]})")
        group.add_argument("--option", default=None, help=f"the numeric option swept (default {DEFAULT_SWEEP[1]})")
        group.add_argument("--values", help="comma-separated values (default: 0 and the option's default times 0.1, 0.3, 1, 3, 10)")

    def base_methods(self, args) -> str:
        return args.method if args.method is not None else DEFAULT_SWEEP[0]

    def options(self, args, cfg: RunConfig) -> dict[str, Any]:
        return {"method": args.method, "option": args.option, "values": args.values}

    def runs(
        self, base: RunConfig, names: list[str], method: str | None = None, option: str | None = None, values: str | list | None = None
    ) -> tuple[list[RunSpec], dict[str, Any]]:
        method, option = method or DEFAULT_SWEEP[0], option or DEFAULT_SWEEP[1]
        vals = sweep_values(method, option, values)
        return lambda_runs(base, method, option, vals), {"method": method, "option": option, "values": vals}

    def collect(self, study: dict, found: dict, tasks: list[str]) -> dict[str, Any]:
        params = study.get("params") or {}
        part: dict[str, Any] = {
            "method": params.get("method"),
            "option": params.get("option"),
            "flag": "--" + str(params.get("option", "")).replace("_", "-"),
            "prior_tasks": tasks[:-1],
            "rows": [],
        }
        for spec in study["runs"]:
            res, e = found[spec["name"]]
            complete = bool(e and e.get(COMPLETE))
            final = e[MATRIX][-1] if complete else None
            part["rows"].append(
                {
                    "value": spec["value"],
                    COMPLETE: complete,
                    "final": final,
                    "prior_mean": mean(final[:-1]) if final and len(final) > 1 else None,
                    "last": final[-1] if final else None,
                    "overall": e.get(FINAL_AVG) if complete else None,
                    BWT: e.get(BWT) if complete else None,
                    SD: e.get(SD) if complete else None,
                    "below": below_doing_nothing(res, e),
                }
            )
        return part

    def tables(self, summary: dict) -> list[Table]:
        return [lambda_table(summary)]
