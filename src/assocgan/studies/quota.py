"""``quota``: the average metric over the tasks seen so far after each task, per method (the paper's Figure 11a):
one run a method."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..metrics import get_metric
from ..report.plots import avg_figure
from ..report.tables import Table, fmt_metric, fmt_pm, spread_of, step_names, study_seeds_note
from ..results import AVG, BWT, COMPLETE, FINAL_AVG, FORGETTING, MEMORY_BYTES, SD, TRAIN_SECONDS
from .base import MethodsStudy, Plot, RunSpec, default_methods, method_title, run_title, variant


def quota_table(summary: dict) -> Table:
    """Figure 11a as a table: each method's average over the tasks seen so far, after each task."""
    metric = summary["metric"]
    n = len(summary["tasks"])
    header = ["Method"] + step_names(n) + ["amplitude"]
    rows = []
    for m in summary["methods"]:
        avg = m.get(AVG) or []
        vals = [v for v in avg if v is not None]
        amp = fmt_metric(max(vals) - min(vals), metric) if len(vals) > 1 else ""
        rows.append([m["label"]] + [fmt_pm(avg[i] if i < len(avg) else None, spread_of(m, AVG, i), metric) for i in range(n)] + [amp])
    return Table(
        f"Quota: average {get_metric(metric).title} over the tasks seen, after each task ({summary['benchmark']})",
        header,
        rows,
        note="amplitude: largest minus smallest average along the sequence (the paper's fluctuation measure)." + study_seeds_note(summary),
    )


def quota_figure(summary: dict):
    """Figure 11a: a line a method."""
    series = [{"label": m["label"], "avg": m.get(AVG)} for m in summary["methods"]]
    return avg_figure(series, summary["tasks"], summary["metric"], f"Quota: {summary['benchmark']}")


class QuotaStudy(MethodsStudy):
    name = "quota"
    help = "average metric after each task as tasks arrive, per method (paper Fig. 11a)"
    description = "The average metric over the tasks seen so far after each task, for each method, as tasks arrive (the paper's Figure 11a / 12a)."
    plots = (Plot("quota", "Quota study (paper Fig. 11a/12a): average metric over the tasks seen so far as tasks arrive.", quota_figure, wide=False),)

    def runs(self, base: RunConfig, names: list[str], methods: list[str] | None = None) -> tuple[list[RunSpec], dict[str, Any]]:
        methods = methods or default_methods()
        return [RunSpec(m, method_title(m), variant(base, [m]), how=m, meta={"method": m}) for m in methods], {"methods": methods}

    def collect(self, study: dict, found: dict, tasks: list[str]) -> dict[str, Any]:
        methods = []
        for spec in study["runs"]:
            e = found[spec["name"]][1]
            methods.append(
                {
                    "name": spec["method"],
                    "label": run_title(spec, e),
                    COMPLETE: bool(e and e.get(COMPLETE)),
                    **{k: (e or {}).get(k) for k in (AVG, FINAL_AVG, BWT, FORGETTING, MEMORY_BYTES, TRAIN_SECONDS, SD)},
                }
            )
        return {"methods": methods}

    def tables(self, summary: dict) -> list[Table]:
        return [quota_table(summary)]
